"""`folder:PATH`: every image file under a folder, decoded once into a uint8 cache.

The folder is walked recursively (PNG, JPEG, WebP, BMP, TIFF, PPM, ... by suffix); links
that leave it are not followed. Each file's split (train/val/test) comes from a hash of
its relative path, so adding files never moves the old ones between splits. The images
are decoded once, one at a time, into `cache/folders/<key>/` (see `blendae.data.cache`:
one flat memory-mapped pixel file and an index), with `manifest.json` listing every file's
size and mtime: a changed, added or removed file rebuilds the cache. Images whose shorter
side exceeds `max_short_side` (default 4·size) are shrunk to it as they are decoded
(antialiased): 2,000 photos of 2048×1536 would take 19 GB at full size, 131 MB at a 128-pixel
shorter side, where a random 32×32 crop still covers a quarter of it (a part of the scene,
not the whole image squeezed), and crop positions stay uniform over every stored pixel.
Files that cannot be used (corrupt, truncated, decompression bombs, smaller than the crop,
links leaving the folder) are skipped with one log line each and counted in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from blendae.data.cache import INDEX_COLUMNS, ImageStore, PixelWriter
from blendae.errors import BlendaeError
from blendae.files import atomic_write, ensure_dir, file_lock, write_json
from blendae.imagefiles import IMAGE_SUFFIXES, read_image

log = logging.getLogger("blendae")

FORMAT_VERSION = 1  # of the folder cache; bump when its layout or meaning changes
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"  # written last: its presence commits a build
SHRINK = "Pillow LANCZOS (JPEG: DCT draft first), shorter side to max_short_side"
SKIP_REASONS = {  # manifest key -> what the summary calls it
    "too_small": "smaller than the crop size",
    "too_large": "too large (decompression bomb check)",
    "unreadable": "corrupt, truncated or unreadable",
    "outside": "links leaving the folder",
}


class _TooSmall(BlendaeError):
    """An image smaller than the crop size (told apart from other defects in the counts)."""


@dataclass
class _Scan:
    """What the walk found: image files `[rel, bytes, mtime_ns]` (sorted), the entries it
    skipped `[rel, reason, message]`, and how many other files it passed over."""

    files: list[list[Any]] = field(default_factory=list)
    skipped: list[list[str]] = field(default_factory=list)
    not_images: int = 0


@dataclass(frozen=True)
class FolderImages:
    """A loaded folder: `manifest` says what the cache holds and how it was made."""

    root: Path
    manifest: dict[str, Any]
    channels: int  # 1 if every image is gray, else 3 (gray images read as RGB)
    stores: dict[str, ImageStore]

    def split(self, name: str) -> ImageStore:
        """The images of split `name` ("train", "val" or "test")."""
        if name not in self.stores:
            raise BlendaeError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
        return self.stores[name]

    def paths(self, name: str) -> list[str]:
        """The relative paths of split `name`'s images, in the order `split(name)` holds them
        (to name an image in a report)."""
        self.split(name)  # a known name
        code, split = SPLITS.index(name), tuple(self.manifest["split"])
        skipped = {s[0] for s in self.manifest["skipped"]}
        return [
            rel
            for rel, _, _ in self.manifest["files"]
            if rel not in skipped and split_of(rel, split) == code
        ]


# ---------------------------------------------------------------- checks and the split


def check_split(split: tuple[int, int, int]) -> tuple[int, int, int]:
    """`split` as three percentages (train, val, test) summing to 100, train above 0."""
    parts = tuple(split)
    if (
        len(parts) != 3
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in parts)
        or sum(parts) != 100
        or parts[0] == 0
    ):
        raise BlendaeError(
            f"invalid split {split!r}: give three non-negative integer percentages "
            "(train, val, test) summing to 100, with train above 0, e.g. (90, 5, 5)"
        )
    return parts  # type: ignore[return-value]


def _check_size(size: int, max_short_side: int | None) -> int:
    """The crop size (a positive multiple of 16) and the shorter-side cap it implies."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 16:
        raise BlendaeError(f"invalid crop size {size!r}: give a positive multiple of 16, e.g. 32")
    cap = 4 * size if max_short_side is None else max_short_side
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < size:
        raise BlendaeError(
            f"invalid max_short_side {max_short_side!r}: give an integer of at least the "
            f"crop size {size}"
        )
    return cap


def split_of(rel: str, split: tuple[int, ...]) -> int:
    """0 (train), 1 (val) or 2 (test) for the file at relative POSIX path `rel`: its hash
    bucket 0..99 against the cumulative percentages. Depends on nothing but `rel`."""
    bucket = int.from_bytes(hashlib.sha256(os.fsencode(rel)).digest()[:8], "big") % 100
    return 0 if bucket < split[0] else 1 if bucket < split[0] + split[1] else 2


# ---------------------------------------------------------------- walking the folder


def _scan(root: Path, exclude: Path) -> _Scan:
    """Every image file under `root` (recursive, sorted), following links only while they
    stay inside it, each real folder once; `exclude` (the cache) is not entered."""
    scan = _Scan()
    _walk(scan, root, root, "", {root, exclude})
    return scan


def _walk(scan: _Scan, root: Path, folder: Path, prefix: str, seen: set[Path]) -> None:
    """Add what `folder` holds to `scan`, its relative paths starting with `prefix`."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        scan.skipped.append([prefix or ".", "unreadable", f"cannot list it: {e.strerror}"])
        return
    for entry in entries:
        rel, real = prefix + entry.name, None  # a Path only where needed: 200,000 cost 3 s
        try:
            if entry.is_symlink():
                real = Path(entry.path).resolve()
                if not real.is_relative_to(root):
                    scan.skipped.append([rel, "outside", f"a link to {real}, outside the folder"])
                    continue
            if entry.is_dir():
                real = real or Path(entry.path)
                if real not in seen:  # a link to a folder walked already: once is enough
                    seen.add(real)
                    _walk(scan, root, real, rel + "/", seen)
            elif not entry.name.lower().endswith(IMAGE_SUFFIXES):
                scan.not_images += 1
            elif entry.is_file():
                st = entry.stat()
                scan.files.append([rel, st.st_size, st.st_mtime_ns])
            else:
                scan.skipped.append([rel, "unreadable", "not a regular file (a broken link?)"])
        except (OSError, RuntimeError) as e:  # RuntimeError: a link loop (Python < 3.13)
            scan.skipped.append([rel, "unreadable", f"cannot read it: {e}"])


# ---------------------------------------------------------------- decoding one image


def _shrunk(h: int, w: int, cap: int) -> tuple[int, int] | None:
    """(width, height) with the shorter side at `cap`, or None if it is not above it."""
    short = min(h, w)
    if short <= cap:
        return None
    return max(cap, round(w * cap / short)), max(cap, round(h * cap / short))


def _decode(path: Path, size: int, cap: int, notes: list[str]) -> np.ndarray:
    """The file as uint8 (C, H, W), C = 1 (gray) or 3, shrunk to `cap` on its shorter side.
    A file that cannot be used raises BlendaeError (a `_TooSmall` cause if too small)."""
    from PIL import Image

    def check_size(h: int, w: int) -> None:
        if h < size or w < size:
            raise _TooSmall(f"{w}×{h} pixels, smaller than the {size}×{size} crops")

    hw = read_image(path, notes, check_size, draft=lambda h, w: _shrunk(h, w, cap))
    target = _shrunk(hw.shape[0], hw.shape[1], cap)
    if target is not None:
        hw = np.asarray(Image.fromarray(hw).resize(target, Image.Resampling.LANCZOS))
    return hw[None] if hw.ndim == 2 else hw.transpose(2, 0, 1)


def _reason(exc: BlendaeError) -> str:
    """The manifest's skip reason for a failed `_decode`."""
    from PIL import Image

    cause = exc.__cause__
    if isinstance(cause, _TooSmall):
        return "too_small"
    bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError)
    return "too_large" if isinstance(cause, bombs) else "unreadable"


# ---------------------------------------------------------------- building the cache


@dataclass
class _TrainStats:
    """Per-channel sums of image means and mean squares over the train split, gray and
    color kept apart until the channel count is known. Each image weighs the same, as
    crops sample images uniformly."""

    gray: np.ndarray = field(default_factory=lambda: np.zeros(2))
    color: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    n: int = 0

    def add(self, chw: np.ndarray) -> None:
        x = chw.reshape(len(chw), -1).astype(np.float32) / 255
        moments = np.stack([x.mean(axis=1), (x * x).mean(axis=1)]).astype(np.float64)
        if len(chw) == 1:
            self.gray += moments[:, 0]
        else:
            self.color += moments
        self.n += 1

    def mean_std(self, channels: int) -> tuple[list[float], list[float]]:
        sums = self.gray[:, None] + (self.color if channels == 3 else 0)  # (2, channels)
        mean, square = sums / max(self.n, 1)
        return mean.tolist(), np.sqrt(np.maximum(square - mean * mean, 0)).tolist()


@dataclass
class _Built:
    """What decoding wrote: the index with a split column, the pixel file's size, train
    statistics, the files skipped, and how many alpha channels were dropped."""

    index: np.ndarray
    nbytes: int
    stats: _TrainStats
    skipped: list[list[str]]
    alpha_dropped: int


def _decode_all(
    root: Path, scan: _Scan, params: dict[str, Any], tmp: Path, progress: bool
) -> _Built:
    """Decode every scanned file into the pixel file `tmp`, one image at a time."""
    size, cap, split = params["size"], params["max_short_side"], tuple(params["split"])
    stats, skipped, notes = _TrainStats(), [], []
    splits = array("q")
    with tmp.open("wb") as f:
        writer = PixelWriter(f)
        bar = progress and sys.stderr.isatty()  # no bar lines in logs
        files = tqdm(scan.files, desc="decoding images", unit="img", disable=not bar)
        for rel, _, _ in files:
            try:
                chw = _decode(root / rel, size, cap, notes)
            except BlendaeError as exc:
                skipped.append([rel, _reason(exc), str(exc)])
                log.warning("%s; skipped", exc)
                continue
            writer.add(chw)
            splits.append(split_of(rel, split))
            if splits[-1] == 0:
                stats.add(chw)
    index = np.column_stack([writer.index(), np.frombuffer(splits, dtype=np.int64)])
    return _Built(index, writer.nbytes, stats, skipped, len(notes))


def _counts(built: _Built, scan: _Scan) -> dict[str, Any]:
    """Images per split, files skipped per reason, other files, alphas dropped."""
    per_split = np.bincount(built.index[:, -1], minlength=len(SPLITS)).tolist()
    return {
        **dict(zip(SPLITS, per_split, strict=True)),
        "skipped": dict(Counter(s[1] for s in scan.skipped + built.skipped)),
        "not_images": scan.not_images,
        "alpha_dropped": built.alpha_dropped,
    }


def _summary(root: Path, counts: dict[str, Any]) -> str:
    """One line: how many images each split holds and what was skipped, and why."""
    skipped = ", ".join(f"{n} {SKIP_REASONS[k]}" for k, n in sorted(counts["skipped"].items()))
    return (
        f"folder {root}: {counts['train']} train, {counts['val']} val, {counts['test']} test "
        f"images; skipped {skipped or 'none'}; {counts['not_images']} other files ignored"
    )


def _build(root: Path, out: Path, params: dict[str, Any], scan: _Scan, progress: bool) -> dict:
    """Decode the folder into a new generation of cache files and commit it by writing the
    manifest, atomically and last: a build killed at any point leaves only files that no
    manifest names (the old manifest is removed first), which the next build removes."""
    (out / MANIFEST).unlink(missing_ok=True)  # first: no manifest may name a missing file
    for stale in out.iterdir():  # under the lock: earlier generations, killed builds
        if stale.name != ".lock":
            stale.unlink()
    for rel, _, message in scan.skipped:
        log.warning("%s: %s; skipped", root / rel, message)
    gen = uuid.uuid4().hex[:12]
    pixels, index_name = f"pixels-{gen}.u8", f"index-{gen}.npy"
    done: list[_Built] = []

    def write_pixels(tmp: Path) -> None:
        done.append(_decode_all(root, scan, params, tmp, progress))
        counts = _counts(done[0], scan)
        if counts["train"] == 0:  # raising here discards the pixel file
            raise BlendaeError(
                f"{_summary(root, counts)}: no usable image in the train split; add images "
                "(at least as large as the crops) or see the skipped files logged above"
            )

    atomic_write(out / pixels, write_pixels)
    built = done[0]
    counts = _counts(built, scan)
    channels = 3 if (built.index[:, 3] > 0).any() else 1
    mean, std = built.stats.mean_std(channels)
    atomic_write(out / index_name, lambda tmp: _save_npy(tmp, built.index))
    manifest = {
        **params,
        "channels": channels,
        "mean": mean,
        "std": std,
        "stats": "train split, [0, 1] units, per channel: each image's mean and mean square "
        "averaged over images (every image weighs the same, as crops sample images uniformly)",
        "counts": counts,
        "files": scan.files,
        "skipped": scan.skipped + built.skipped,
        "walk_skipped": len(scan.skipped),  # the first ones: found by the walk, not decoding
        "pixels": pixels,
        "pixel_bytes": built.nbytes,
        "index": index_name,
        "index_columns": [*INDEX_COLUMNS, "split"],
        "layout": "one flat uint8 file, each image planar C×H×W from its offset; "
        "channel_stride 0: a gray image, read as every channel",
    }
    write_json(out / MANIFEST, manifest)
    log.info(_summary(root, counts))
    return json.loads(json.dumps(manifest))  # tuples -> lists, as a warm load returns it


def _save_npy(path: Path, a: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, a)


# ---------------------------------------------------------------- loading


def _cached(out: Path, params: dict[str, Any], scan: _Scan) -> dict[str, Any] | None:
    """The manifest if the cache holds a complete build of exactly the files scanned now."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("folder cache %s is unreadable (%s); rebuilding it", out, e)
        return None
    same_params = all(manifest.get(k) == v for k, v in json.loads(json.dumps(params)).items())
    walk_skipped = manifest.get("skipped", [])[: manifest.get("walk_skipped", 0)]
    if not same_params or manifest.get("files") != scan.files or walk_skipped != scan.skipped:
        log.info("folder %s changed since its cache was built; rebuilding it", params["root"])
        return None
    return manifest


def _open(root: Path, out: Path, manifest: dict[str, Any]) -> FolderImages:
    """The memory-mapped stores of a committed build."""
    pixels, nbytes = out / manifest["pixels"], manifest["pixel_bytes"]
    index = np.load(out / manifest["index"])
    mean_std = (tuple(manifest["mean"]), tuple(manifest["std"]))
    channels = manifest["channels"]
    stores = {
        name: ImageStore(pixels, nbytes, index[index[:, -1] == code, :-1], channels, mean_std)
        for code, name in enumerate(SPLITS)
    }
    return FolderImages(root, manifest, channels, stores)


def load_folder(
    path: str | Path,
    *,
    cache: str | Path,
    size: int = 32,
    split: tuple[int, int, int] = (90, 5, 5),
    max_short_side: int | None = None,
    progress: bool = True,
) -> FolderImages:
    """The images under `path`, decoded once into `cache/folders/<key>/` and memory-mapped.

    `size` is the crop size (a multiple of 16): smaller images are skipped. `split` gives
    the train/val/test percentages, assigned per file by a hash of its relative path.
    Images whose shorter side exceeds `max_short_side` (default 4·size) are stored shrunk
    to it; pass a large value to keep every pixel (and the disk space that costs). The
    cache key hashes the folder's real path and these parameters; the manifest's file list
    (sizes, mtimes) decides whether the cached build is still the folder's.
    """
    cap = _check_size(size, max_short_side)
    split = check_split(split)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BlendaeError(f"folder:{path}: no such folder; give a folder of image files")
    root = root.resolve()
    params = {
        "format_version": FORMAT_VERSION,
        "root": str(root),
        "size": size,
        "max_short_side": cap,
        "split": list(split),
        "split_rule": "sha256(relative POSIX path)[:8] big-endian % 100 vs cumulative split",
        "shrink": SHRINK,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    out = ensure_dir(Path(cache) / "folders" / key)
    with file_lock(out / ".lock"):  # a second process waits, then finds the build done
        scan = _scan(root, Path(cache).resolve())
        manifest = _cached(out, params, scan)
        if manifest is not None:
            try:
                return _open(root, out, manifest)
            except (OSError, ValueError) as e:
                log.warning("folder cache %s is unusable (%s); rebuilding it", out, e)
        return _open(root, out, _build(root, out, {**params, "key": key}, scan, progress))
