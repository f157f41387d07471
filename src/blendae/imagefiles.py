"""Image files in, files out, and nothing the user has destroyed: the file layer under
`blendae compress`, `decompress` and `separate`.

Every target is checked before anything is written (an existing file is replaced only with
`force`, an input never), every input is read before the first folder is created, and a
failure removes what the call created.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blendae.errors import BlendaeError
from blendae.files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # read as 0..65535, scaled to 8 bits
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


@dataclass(frozen=True)
class Source:
    path: Path
    rel: Path  # where its output goes under a folder -o (the tree below an input folder)


def _describe(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:3]) + (", ..." if len(suffixes) > 3 else "")


def expand(
    inputs: list[Path], suffixes: tuple[str, ...], what: str, recursive: bool, notes: list[str]
) -> list[Source]:
    """Files as given; folders as their regular files with a matching suffix, sorted (the
    top level only unless `recursive`). What a folder holds that is skipped is counted."""
    sources: list[Source] = []
    other = not_files = subfolders = 0
    for path in inputs:
        if path.is_dir():
            found: list[Source] = []
            walk = sorted(path.rglob("*") if recursive else path.iterdir())
            for entry in walk:
                if entry.is_dir():
                    subfolders += not recursive and entry.suffix.lower() not in suffixes
                    not_files += entry.suffix.lower() in suffixes
                elif entry.suffix.lower() not in suffixes:
                    other += entry.is_file()
                elif entry.is_file():
                    found.append(Source(entry, entry.relative_to(path)))
                else:  # a dangling symlink, a socket, a fifo, ...
                    not_files += 1
            if not found:
                raise BlendaeError(
                    f"folder {path} has no {what} ({_describe(suffixes)})"
                    + ("" if recursive else "; --recursive looks into its subfolders")
                )
            sources += found
        elif path.is_file():
            sources.append(Source(path, Path(path.name)))
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


def plan_targets(
    sources: list[Source], out: Path, suffixes: tuple[str, ...], force: bool
) -> list[Path]:
    """The files the sources become (for each source one per suffix, in order), all
    checked before anything is written. With one suffix, `out` may name the one output file
    of one input; otherwise it is a folder mirroring the inputs' names."""
    if out.is_dir() or len(suffixes) > 1:
        folder = True
    elif (
        os.path.lexists(out)
        or out.suffix.lower() == suffixes[0]
        or (out.suffix and len(sources) == 1)
    ):
        if len(sources) > 1:
            raise BlendaeError(
                f"-o {out} names a file but there are {len(sources)} inputs; give a folder"
            )
        folder = False
    else:
        folder = True
    if folder and os.path.lexists(out) and not out.is_dir():
        raise BlendaeError(f"-o {out} is a file; give a folder")
    if folder:
        targets = [out / s.rel.with_suffix(suffix) for s in sources for suffix in suffixes]
        owners = [s for s in sources for _ in suffixes]
    else:
        targets, owners = [out], sources
    seen: dict[Path, Path] = {}
    resolved_inputs = {s.path.resolve(): s.path for s in sources}
    for source, target in zip(owners, targets, strict=True):
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


def write_all(targets: list[Path], writers: list[Callable[[Path], None]], force: bool) -> None:
    """Create the folders, then write every target; on failure remove what was created."""
    created: list[Path] = []
    try:
        _make_parents(targets, created)
        for target, write in zip(targets, writers, strict=True):
            existed = os.path.lexists(target)
            atomic_write(target, write, replace=force)
            if not existed:
                created.append(target)
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        raise


def read_image(
    path: Path,
    notes: list[str],
    check_size: Callable[[int, int], None],
    draft: Callable[[int, int], tuple[int, int] | None] | None = None,
) -> np.ndarray:
    """An image file → uint8 H×W or H×W×3, as the user sees it: 16-bit scaled to 8 bits,
    palettes expanded, alpha dropped (with a note). `check_size(height, width)` refuses a
    size before any pixel is decoded. `draft(height, width)` may name the (width, height)
    the caller will shrink the image to: a JPEG then decodes at 1/2, 1/4 or 1/8 of its size
    (never below that), far faster and in less memory. Any defect is a `BlendaeError`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd files: not ours
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                check_size(h, w)  # before decoding a pixel
                if draft is not None and (target := draft(h, w)) is not None:
                    im.draft(None, target)  # JPEG only; other formats ignore it
                im.load()
                return _to_array(im, path, notes)
    except BlendaeError as exc:
        raise BlendaeError(f"{path}: {exc}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BlendaeError(f"{path}: image too large ({exc})") from exc
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
