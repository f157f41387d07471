"""Files and folders → `.bae` files and back: the layer under `blendae compress/decompress`.

Nothing the user has is destroyed (see `blendae.imagefiles`). Warnings (skipped files,
dropped alpha channels) and the summary are reported only when the call succeeds, so a
failure is one error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from blendae.codec import container
from blendae.codec.images import check_size, compress_batch, decompress_parsed
from blendae.errors import BlendaeError
from blendae.imagefiles import IMAGE_SUFFIXES, expand, plan_targets, read_image, write_all


@dataclass
class Report:
    """What a compress/decompress call did: the files written, and what to tell the user."""

    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings, one line each
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    bae_bytes: int = 0

    def wrote(self, targets: list[Path]) -> Report:
        self.written = targets
        self.bytes_out = sum(t.stat().st_size for t in targets)
        return self

    def lines(self) -> list[str]:
        """The notes, then the summary: what the CLI prints to stderr after the work."""
        return [*self.notes, self.summary()]

    def summary(self) -> str:
        images = self.bytes_out + self.bytes_in - self.bae_bytes  # the image files' side
        ratio = images / self.bae_bytes if self.bae_bytes else float("inf")
        bpp = 8 * self.bae_bytes / self.pixels if self.pixels else 0.0
        n = len(self.written)
        return (
            f"{n} file{'s' if n != 1 else ''}, {self.bytes_in:,} → {self.bytes_out:,} bytes "
            f"(image files {ratio:.2f}× the .bae size), {bpp:.3f} bpp"
        )


def compress_files(
    inputs: list[Path],
    out: Path,
    *,
    model: str | None = None,
    force: bool = False,
    recursive: bool = False,
) -> Report:
    """Image files or folders → `.bae` files in folder `out` (or file `out`, for one input);
    see the module's doc for what is never done."""
    report = Report()
    sources = expand(inputs, IMAGE_SUFFIXES, "images", recursive, report.notes)
    targets = plan_targets(sources, out, (".bae",), force)
    images = [read_image(s.path, report.notes, check_size) for s in sources]
    datas = compress_batch(images, model)
    report.bytes_in = sum(s.path.stat().st_size for s in sources)
    report.pixels = sum(im.shape[0] * im.shape[1] for im in images)
    report.bae_bytes = sum(len(d) for d in datas)  # == bytes_out once written
    writers = [lambda tmp, data=data: tmp.write_bytes(data) for data in datas]
    write_all(targets, writers, force)
    return report.wrote(targets)


def decompress_files(
    inputs: list[Path],
    out: Path,
    *,
    model: str | None = None,
    force: bool = False,
    recursive: bool = False,
) -> Report:
    """`.bae` files or folders → PNG files in folder `out` (or file `out`, for one input)."""
    from PIL import Image

    report = Report()
    sources = expand(inputs, (".bae",), ".bae files", recursive, report.notes)
    targets = plan_targets(sources, out, (".png",), force)
    parsed = []
    for source in sources:  # name the bad file before decoding any
        try:
            data = source.path.read_bytes()
            parsed.append(container.unpack(data))
        except OSError as exc:
            raise BlendaeError(f"cannot read {source.path}: {exc.strerror}") from exc
        except BlendaeError as exc:
            raise BlendaeError(f"{source.path}: {exc}") from exc
        report.bytes_in += len(data)
    report.bae_bytes = report.bytes_in
    report.pixels = sum(header.height * header.width for header, _ in parsed)
    images = decompress_parsed(parsed, model, [str(s.path) for s in sources])
    writers = [
        lambda tmp, im=image: Image.fromarray(im).save(tmp, format="PNG") for image in images
    ]
    write_all(targets, writers, force)
    return report.wrote(targets)
