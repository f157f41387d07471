"""Files and folders → `.bae` files and back: the layer under `blendae compress/decompress`.

Nothing the user has is destroyed: every target is checked before anything is written
(an existing file is replaced only with `force`, an input never), every input is read and
coded before the first folder is created, and a failure removes what this call created.
Warnings (skipped files, dropped alpha channels) and the summary are reported only when
the call succeeds, so a failure is one error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blendae.codec import container
from blendae.codec.images import MAX_PIXELS, check_size, compress_batch, decompress_parsed
from blendae.errors import BlendaeError
from blendae.files import atomic_write

log = logging.getLogger("blendae")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # read as 0..65535, scaled to 8 bits
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


@dataclass
class Report:
    """What a compress/decompress call did: the files written, and what to tell the user."""

    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings, one line each
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    bae_bytes: int = 0

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


@dataclass(frozen=True)
class _Source:
    path: Path
    rel: Path  # where its output goes under a folder -o (the tree below an input folder)


def _describe(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:3]) + (", ..." if len(suffixes) > 3 else "")


def _expand(
    inputs: list[Path], suffixes: tuple[str, ...], what: str, recursive: bool, notes: list[str]
) -> list[_Source]:
    """Files as given; folders as their regular files with a matching suffix, sorted (the
    top level only unless `recursive`). What a folder holds that is skipped is counted."""
    sources: list[_Source] = []
    other = not_files = subfolders = 0
    for path in inputs:
        if path.is_dir():
            found: list[_Source] = []
            walk = sorted(path.rglob("*") if recursive else path.iterdir())
            for entry in walk:
                if entry.is_dir():
                    subfolders += not recursive and entry.suffix.lower() not in suffixes
                    not_files += entry.suffix.lower() in suffixes
                elif entry.suffix.lower() not in suffixes:
                    other += entry.is_file()
                elif entry.is_file():
                    found.append(_Source(entry, entry.relative_to(path)))
                else:  # a dangling symlink, a socket, a fifo, ...
                    not_files += 1
            if not found:
                raise BlendaeError(
                    f"folder {path} has no {what} ({_describe(suffixes)})"
                    + ("" if recursive else "; --recursive looks into its subfolders")
                )
            sources += found
        elif path.is_file():
            sources.append(_Source(path, Path(path.name)))
        elif os.path.lexists(path):
            raise BlendaeError(f"input {path} is not a regular file or a folder")
        else:
            raise BlendaeError(f"input {path} does not exist")
    if other:
        notes.append(
            f"skipped {other} file{'s' * (other > 1)} that are not {what} ({_describe(suffixes)})"
        )
    if not_files:
        notes.append(
            f"skipped {not_files} entr{'ies' if not_files > 1 else 'y'} named like {what} that "
            "are not regular files (folders, broken links)"
        )
    if subfolders:
        notes.append(
            f"skipped {subfolders} subfolder{'s' * (subfolders > 1)}; --recursive codes them too"
        )
    return sources


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def _targets(sources: list[_Source], out: Path, suffix: str, force: bool) -> list[Path]:
    """The file each source becomes, all checked before anything is written."""
    if out.is_dir():
        folder = True
    elif os.path.lexists(out) or out.suffix.lower() == suffix or (out.suffix and len(sources) == 1):
        if len(sources) > 1:
            raise BlendaeError(
                f"-o {out} names a file but there are {len(sources)} inputs; give a folder"
            )
        folder = False
    else:
        folder = True
    targets = [out / s.rel.with_suffix(suffix) for s in sources] if folder else [out]
    seen: dict[Path, Path] = {}
    resolved_inputs = {s.path.resolve(): s.path for s in sources}
    for source, target in zip(sources, targets, strict=True):
        if target in seen:
            raise BlendaeError(
                f"{seen[target]} and {source.path} would both write {target}; rename one"
            )
        seen[target] = source.path
        real = target.resolve()
        clash = resolved_inputs.get(real) or next(
            (s.path for s in sources if _same_file(target, s.path)), None
        )
        if clash is not None:
            raise BlendaeError(f"refusing to write {target}: it is the input {clash}")
        if target.is_dir():
            raise BlendaeError(f"cannot write {target}: it is a folder")
        if os.path.lexists(target) and not force:
            raise BlendaeError(f"{target} already exists; use --force to replace it")
        for parent in target.parents:  # a file where a folder must go
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    raise BlendaeError(f"cannot create folder {parent}: a file has that name")
                break
    return targets


def _make_parents(targets: list[Path], created: list[Path]) -> None:
    for target in targets:
        missing = []
        for parent in target.parents:
            if parent.is_dir():
                break
            missing.append(parent)
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as exc:
                raise BlendaeError(f"cannot create folder {folder}: {exc.strerror}") from exc
            created.append(folder)


def _write_all(
    targets: list[Path], writers: list[Callable[[Path], None]], force: bool, report: Report
) -> None:
    """Create the folders, then write every target; on failure remove what was created."""
    created: list[Path] = []
    try:
        _make_parents(targets, created)
        for target, write in zip(targets, writers, strict=True):
            existed = os.path.lexists(target)
            atomic_write(target, write, replace=force)
            if not existed:
                created.append(target)
            report.written.append(target)
            report.bytes_out += target.stat().st_size
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        raise


def _read_image(path: Path, notes: list[str]) -> np.ndarray:
    """An image file → uint8 H×W or H×W×3, as the user sees it: 16-bit scaled to 8 bits,
    palettes expanded, alpha dropped (with a note). Any defect is a `BlendaeError`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd files: not ours
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                check_size(h, w)  # before decoding a pixel
                im.load()
                return _to_array(im, path, notes)
    except BlendaeError as exc:
        raise BlendaeError(f"{path}: {exc}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BlendaeError(
            f"{path}: image too large ({exc}); blendae codes at most {MAX_PIXELS} pixels"
        ) from exc
    except MemoryError as exc:
        raise BlendaeError(f"{path}: image too large to decode") from exc
    except Exception as exc:  # a decoder of untrusted files: any defect
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BlendaeError(f"cannot read image {path}: {reason}") from exc


def _to_array(im: Any, path: Path, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode in ALPHA or (mode in ("P", "L", "RGB", "1") and "transparency" in im.info):
        notes.append(f"{path}: dropped the alpha channel (transparency); blendae codes gray or RGB")
    if mode in SIXTEEN_BIT:
        values = np.asarray(im).astype(np.int64)
        return ((np.clip(values, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    if mode in ("1", "L", "LA", "La", "F"):
        return np.asarray(im.convert("L"))
    if mode == "P":
        im = im.convert("RGBA").convert("RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def _finish(report: Report) -> Report:
    for note in report.notes:
        log.warning("%s", note)
    log.info("%s", report.summary())
    return report


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
    sources = _expand(inputs, IMAGE_SUFFIXES, "images", recursive, report.notes)
    targets = _targets(sources, out, ".bae", force)
    images = [_read_image(s.path, report.notes) for s in sources]
    datas = compress_batch(images, model)
    report.bytes_in = sum(s.path.stat().st_size for s in sources)
    report.pixels = sum(im.shape[0] * im.shape[1] for im in images)
    report.bae_bytes = sum(len(d) for d in datas)  # == bytes_out once written
    writers = [lambda tmp, data=data: tmp.write_bytes(data) for data in datas]
    _write_all(targets, writers, force, report)
    return report


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
    sources = _expand(inputs, (".bae",), ".bae files", recursive, report.notes)
    targets = _targets(sources, out, ".png", force)
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
    _write_all(targets, writers, force, report)
    return report


def compress_paths(
    inputs: list[Path],
    out: Path,
    *,
    model: str | None = None,
    force: bool = False,
    recursive: bool = False,
) -> list[Path]:
    """`compress_files`, its warnings and summary logged to logger "blendae": the paths
    written."""
    return _finish(
        compress_files(inputs, out, model=model, force=force, recursive=recursive)
    ).written


def decompress_paths(
    inputs: list[Path],
    out: Path,
    *,
    model: str | None = None,
    force: bool = False,
    recursive: bool = False,
) -> list[Path]:
    """`decompress_files`, its warnings and summary logged to logger "blendae": the paths
    written."""
    return _finish(
        decompress_files(inputs, out, model=model, force=force, recursive=recursive)
    ).written
