"""Decoded images of any size in one flat uint8 file, memory-mapped, and crops from it.

Each image is stored at its own size, planar (C×H×W, C = 1 or 3), one after the other;
an int64 index row `(offset, height, width, channel_stride)` locates it. A gray image in
a color set is stored once with `channel_stride` 0, so the same gather reads it as three
equal channels: no copy on disk, no per-image branch when cropping. A batch of crops is
then one fancy-index gather on the memory map, whatever the images' sizes, and only the
pages it touches are read: a pixel file far larger than RAM costs no memory.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from blendae.errors import BlendaeError

INDEX_COLUMNS = ("offset", "height", "width", "channel_stride")  # int64, one row per image


class PixelWriter:
    """Appends images to an open binary file and records their index rows, so a build
    streams one image at a time (bounded memory, whatever the folder's size)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._rows = array("q")  # 32 bytes per image, not a Python object each
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._rows) // len(INDEX_COLUMNS)

    def add(self, chw: np.ndarray) -> None:
        """Append one uint8 image (C, H, W), C = 1 (gray) or 3."""
        c, h, w = chw.shape
        assert chw.dtype == np.uint8 and c in (1, 3), (chw.dtype, chw.shape)
        self._f.write(np.ascontiguousarray(chw).data)
        self._rows.extend((self.nbytes, h, w, h * w if c == 3 else 0))
        self.nbytes += chw.size

    def index(self) -> np.ndarray:
        """The index so far, (N, 4) int64 (see INDEX_COLUMNS)."""
        return np.frombuffer(self._rows, dtype=np.int64).reshape(-1, len(INDEX_COLUMNS)).copy()


def open_pixels(path: Path, nbytes: int) -> np.ndarray:
    """The pixel file as a read-only flat uint8 memory map; its size must be `nbytes`
    (a shorter file is a build that did not finish)."""
    if path.stat().st_size != nbytes:
        raise ValueError(f"{path} holds {path.stat().st_size} bytes, expected {nbytes}")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(nbytes,))


class ImageStore:
    """One split's images in the pixel file: `crops` cuts batches from them.

    `mean_std` is the per-channel mean and standard deviation of the TRAIN split in [0, 1]
    units (the same for every split: the statistics training normalizes with). A store
    pickles as its file's path, not its pixels (for worker processes), and maps it again.
    """

    def __init__(
        self,
        pixels: Path,
        nbytes: int,
        index: np.ndarray,
        channels: int,
        mean_std: tuple[tuple[float, ...], tuple[float, ...]],
    ) -> None:
        self._path, self._nbytes = pixels, nbytes
        self._pixels = open_pixels(pixels, nbytes)  # flat uint8 memory map
        self._index = index  # (N, 4) int64
        self.channels = channels
        self.mean_std = mean_std
        self._channel = np.arange(channels, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_pixels"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pixels = open_pixels(self._path, self._nbytes)

    def __len__(self) -> int:
        return len(self._index)

    def sizes(self) -> np.ndarray:
        """(N, 2) int64: each stored image's height and width."""
        return self._index[:, 1:3].copy()

    def crops(
        self, idx: np.ndarray, size: int, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """uint8 (B, C, size, size): from each image `idx[b]`, a crop at a position drawn
        from `rng` (uniform over every position: training), or the center crop when `rng`
        is None (validation, test). One vectorized gather; no Python loop over images."""
        rows = self._index[np.asarray(idx, dtype=np.intp)]  # (B, 4); IndexError if out of range
        offset, h, w, stride = rows.T
        if len(rows) and (h.min() < size or w.min() < size):
            raise BlendaeError(
                f"cannot cut {size}×{size} crops: an image asked for has a side of "
                f"{int(min(h.min(), w.min()))} pixels; use a crop size up to the one the "
                "folder was loaded with"
            )
        if rng is None:
            y, x = (h - size) // 2, (w - size) // 2
        else:
            y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        r = np.arange(size, dtype=np.int64)
        start = offset + y * w + x  # (B,): the crop's first pixel in channel 0
        at = (
            (start[:, None] + stride[:, None] * self._channel)[:, :, None, None]  # (B, C, 1, 1)
            + (w[:, None] * r)[:, None, :, None]  # rows: (B, 1, size, 1)
            + r  # columns: (size,)
        )  # (B, C, size, size) positions in the flat file
        return np.asarray(self._pixels[at])
