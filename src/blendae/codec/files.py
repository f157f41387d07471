"""Files and folders → `.bae` files and back: the layer under `blendae compress/decompress`.

Nothing the user has is destroyed (see `blendae.imagefiles`). Warnings (skipped files,
dropped alpha channels) and the summary are reported only when the call succeeds, so a
failure is one error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blendae.codec import container, decode
from blendae.codec.limits import check_size
from blendae.codec.zoo import check_quality
from blendae.errors import BlendaeError
from blendae.imagefiles import IMAGE_SUFFIXES, expand, plan_targets, read_image, write_all

# From this many files on, torch's faster decoding may pay for importing it (~1.5 s): with
# 0.11's torch-free convolutions it ran at 0.76-1.09x torch's speed on the 2-core machine
# (1,000 files of the study's test blends), so torch paid off from 6,500-8,000 files, or
# never (benchmarks/decode_anywhere.py, six runs; 0.6: 5,400-6,500 files).
TORCH_FROM = 7000


@dataclass
class Report:
    """What a compress/decompress call did: the files written, and what to tell the user."""

    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings, one line each
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    bae_bytes: int = 0
    quality: int | None = None  # the quality compressed files were coded at, if any

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
            + ("" if self.quality is None else f" at quality {self.quality}")
        )


def compress_files(
    inputs: list[Path],
    out: Path,
    *,
    model: str | None = None,
    quality: int | None = None,
    force: bool = False,
    recursive: bool = False,
) -> Report:
    """Image files or folders → `.bae` files in folder `out` (or file `out`, for one input);
    see the module's doc for what is never done. `quality` (0..100) sets a variable-rate
    model's trade-off (default: the model's own); a fixed-rate model refuses it."""
    check_quality(model, quality)  # a shipped fixed-rate model: refused before any work
    report = Report()
    sources = expand(inputs, IMAGE_SUFFIXES, "images", recursive, report.notes)
    targets = plan_targets(sources, out, (".bae",), force)
    images = [read_image(s.path, report.notes, check_size) for s in sources]
    if not decode.torch_installed():
        raise BlendaeError("compressing needs torch (decompressing does not); install torch")
    from blendae.codec.images import compress_batch  # torch, only when there is work

    datas = compress_batch(images, model, quality)
    if datas:
        report.quality = container.unpack(datas[0])[0].quality  # the one all were coded at
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


def decompress_parsed(
    parsed: list[tuple[container.Header, bytes]], model: str | None, names: list[str]
) -> list[np.ndarray]:
    """Decode with the torch-free decoder when it is faster for the job (a few files: it
    starts in a fraction of the time importing torch takes) or torch is missing, else with
    torch; both give the same pixels (`decode.handles` sends the rest to torch)."""
    if (len(parsed) < TORCH_FROM or not decode.torch_installed()) and decode.handles(parsed, model):
        return decode.decode_parsed(parsed, model, names)
    from blendae.codec.images import decompress_parsed as with_torch

    return with_torch(parsed, model, names)
