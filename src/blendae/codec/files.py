"""Files and folders → `.bae` files and back: the layer under `blendae compress/decompress`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blendae.codec import container
from blendae.codec.images import compress_batch, decompress_parsed
from blendae.errors import BlendaeError
from blendae.files import atomic_write, ensure_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _expand(inputs: list[Path], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files as given, folders as their files with a matching suffix (sorted, not recursive)."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise BlendaeError(f"folder {path} has no {what} ({', '.join(suffixes)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise BlendaeError(f"input {path} does not exist")
    return files


def _targets(files: list[Path], out: Path, suffix: str) -> list[Path]:
    """One input and `out` not a folder: write `out` itself; else `out/STEM.suffix` each."""
    if len(files) == 1 and not out.is_dir() and out.suffix:
        ensure_dir(out.parent)
        return [out]
    if out.exists() and not out.is_dir():
        raise BlendaeError(f"-o {out} is a file but there are {len(files)} inputs; give a folder")
    targets = [out / (f.stem + suffix) for f in files]
    clash = {t for t in targets if targets.count(t) > 1}
    if clash:
        raise BlendaeError(f"several inputs would write {sorted(clash)[0]}; rename one of them")
    ensure_dir(out)
    return targets


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(im.convert("L" if gray else "RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise BlendaeError(f"cannot read image {path}: {exc}") from exc


def compress_paths(inputs: list[Path], out: Path, *, model: str | None = None) -> list[Path]:
    """Image files or folders → `.bae` files in folder `out` (or file `out`, for one input)."""
    files = _expand(inputs, IMAGE_SUFFIXES, "images")
    targets = _targets(files, out, ".bae")
    for target, data in zip(
        targets, compress_batch([_read_image(f) for f in files], model), strict=True
    ):
        atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
    return targets


def decompress_paths(inputs: list[Path], out: Path, *, model: str | None = None) -> list[Path]:
    """`.bae` files or folders → PNG files in folder `out` (or file `out`, for one input)."""
    from PIL import Image

    files = _expand(inputs, (".bae",), ".bae files")
    parsed = []
    for path in files:  # name the bad file before decoding any
        try:
            parsed.append(container.unpack(path.read_bytes()))
        except BlendaeError as exc:
            raise BlendaeError(f"{path}: {exc}") from exc
    targets = _targets(files, out, ".png")
    images = decompress_parsed(parsed, model)
    for target, image in zip(targets, images, strict=True):
        atomic_write(target, lambda tmp, im=image: Image.fromarray(im).save(tmp, format="PNG"))
    return targets
