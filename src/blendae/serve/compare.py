"""The compare view's work, as pure functions on bytes: decode an upload safely, code it
with every shipped blendae model (the variable-rate one at the quality the page's slider
asks for), and find the WebP and AVIF files nearest in size.

Nothing here touches the file system. Uploads are untrusted: their size, format and pixel
count are checked before any pixel is decoded (Pillow's decompression-bomb checks as well).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from blendae.codec import DEFAULT, compress_batch, container, decompress_batch, zoo_entries
from blendae.codec.zoo import offered
from blendae.errors import BlendaeError

MAX_UPLOAD_BYTES = 4 << 20  # 4 MiB: far above any image this page is meant for
MAX_PIXELS = 512 * 512  # each upload is coded by every model and ~15 WebP/AVIF encodes
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "AVIF")  # Pillow may open these


class UploadError(BlendaeError):
    """An upload the page refuses; the message is shown to the user as is."""


@dataclass
class Point:
    """One coded version of the image: its file, its decoded pixels, and their quality."""

    codec: str  # "blendae", "webp" or "avif"
    setting: str  # model name ("q3") or quality ("q42")
    data: bytes  # the whole file, headers included
    decoded: np.ndarray  # uint8, the original's shape
    pixels: int
    note: str | None = None  # e.g. why a nearest-size file is still far from its target
    quality: int | None = None  # a variable-rate blendae model's quality (its file records it)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / self.pixels

    def summary(self, original: np.ndarray) -> dict[str, Any]:
        """Sizes and quality against `original` (PSNR None for a lossless match)."""
        return {
            "codec": self.codec,
            "setting": self.setting,
            "bytes": len(self.data),
            "bpp": self.bpp,
            "psnr": psnr(original, self.decoded),
            "note": self.note,
            "quality": self.quality,
        }


def psnr(x: np.ndarray, x_hat: np.ndarray) -> float | None:
    """10·log10(255² / MSE) over every pixel and channel; None when the two are equal."""
    mse = float(np.mean((x.astype(np.float64) - x_hat.astype(np.float64)) ** 2))
    return None if mse == 0 else 10 * math.log10(255**2 / mse)


# ---- uploads → pixels -------------------------------------------------------------------------
def decode_upload(data: bytes) -> np.ndarray:
    """Untrusted image bytes → uint8 H×W (gray) or H×W×3 (anything else, alpha dropped).

    Refuses bodies over MAX_UPLOAD_BYTES, formats outside FORMATS, and images whose header
    claims more than MAX_PIXELS pixels, before decoding any pixel.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"the file is {len(data):,} bytes; the page takes at most {MAX_UPLOAD_BYTES:,}"
        )
    if not data:
        raise UploadError("the file is empty; pick an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                w, h = image.size
                if w * h > MAX_PIXELS:
                    raise UploadError(
                        f"the image is {w}×{h} pixels; the page takes at most "
                        f"{MAX_PIXELS:,} pixels (for example 512×512): crop or downscale it"
                    )
                image.seek(0)  # the first frame of an animation
                gray = image.mode in ("1", "L", "LA", "F") or image.mode.startswith("I")
                mode = "L" if gray else "RGB"  # 16-bit gray is clipped to 8 bits
                pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"refused a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UploadError(
            f"not an image this page can read; send one of {', '.join(FORMATS)} "
            "(a .bae file is decoded when its name ends in .bae)"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise UploadError(f"the image is damaged and cannot be decoded: {exc}") from exc
    return pixels


def to_png(pixels: np.ndarray) -> bytes:
    """uint8 H×W or H×W×3 → PNG bytes (lossless, for display)."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


# ---- blendae ----------------------------------------------------------------------------------
def variable_rate(name: str) -> bool:
    """Whether shipped model `name` codes at any quality (its JSON records a default one)."""
    return zoo_entries()[name].get("quality") is not None


def slider_model() -> str | None:
    """The model the page's quality slider drives: the default model when it is variable-rate,
    else the first variable-rate one; None when none is shipped."""
    names = [name for name in offered() if variable_rate(name)]
    return DEFAULT if DEFAULT in names else next(iter(names), None)


def parse_quality(text: str | None) -> int | None:
    """The `quality` query parameter: None (the model's default) or a whole number 0..100;
    anything else is an `UploadError` the page shows as it is."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > container.MAX_QUALITY:
        raise UploadError(f"quality must be a whole number 0..100, got {text[:20]!r}")
    return int(text)


def blendae_point(pixels: np.ndarray, name: str, quality: int | None = None) -> Point:
    """The image coded by shipped model `name` (a variable-rate one at `quality`, default
    its own), and that file decoded."""
    q = quality if variable_rate(name) else None
    (data,) = compress_batch([pixels], model=name, quality=q)
    (decoded,) = decompress_batch([data], model=name)
    coded_at = container.unpack(data)[0].quality  # the quality the file records
    n = pixels.shape[0] * pixels.shape[1]
    return Point("blendae", name, data, decoded, n, quality=coded_at)


def blendae_points(pixels: np.ndarray, quality: int | None = None) -> list[Point]:
    """The image coded by every shipped model (zoo order), variable-rate ones at `quality`."""
    return [blendae_point(pixels, name, quality) for name in offered()]


def decode_bae(data: bytes) -> np.ndarray:
    """Untrusted `.bae` bytes → uint8 pixels; corrupt or foreign files raise BlendaeError.

    The codec checks the header (CRC included) and bounds the image size before decoding.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"the file is {len(data):,} bytes; the page takes at most {MAX_UPLOAD_BYTES:,}"
        )
    (decoded,) = decompress_batch([data])
    return decoded


# ---- WebP and AVIF, at the nearest size -------------------------------------------------------
def _pillow_codec(
    fmt: str, **options: Any
) -> Callable[[np.ndarray, int], tuple[bytes, np.ndarray]]:
    """A function (pixels, quality) → (file bytes, the file decoded by Pillow)."""

    def code(pixels: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
        out = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(out, format=fmt, quality=quality, **options)
        data = out.getvalue()
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            decoded = np.asarray(image.convert("L" if pixels.ndim == 2 else "RGB"))
        return data, decoded

    return code


# WebP's slowest, smallest setting and AVIF's default speed: each at its best for its size
OTHER_CODECS = {
    "webp": _pillow_codec("WEBP", method=6),
    "avif": _pillow_codec("AVIF", speed=6),
}


def nearest_size(
    pixels: np.ndarray, codec: str, targets: list[int], qualities: range = range(0, 101)
) -> list[Point]:
    """For each target size in bytes, the `codec` file (over `qualities`) nearest to it.

    File size grows with quality almost monotonically, so a binary search finds the last
    quality at or below the target; that one and the next are compared. Encodings are
    cached, so the five targets share most of their ~7 encodes each.
    """
    code = OTHER_CODECS[codec]
    cache: dict[int, tuple[bytes, np.ndarray]] = {}

    def at(i: int) -> tuple[bytes, np.ndarray]:
        if i not in cache:
            cache[i] = code(pixels, qualities[i])
        return cache[i]

    n = pixels.shape[0] * pixels.shape[1]
    points = []
    for target in targets:
        lo, hi = 0, len(qualities) - 1  # invariant: the answer index is in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(at(mid)[0]) <= target:
                lo = mid
            else:
                hi = mid - 1
        candidates = {lo, min(lo + 1, len(qualities) - 1)}
        best = min(sorted(candidates), key=lambda i: abs(len(at(i)[0]) - target))
        data, decoded = at(best)
        note = None
        if best == 0 and len(data) > target:
            note = f"the smallest {codec.upper()} file at any quality"
        elif best == len(qualities) - 1 and len(data) < target:
            note = f"the largest {codec.upper()} file at any quality"
        points.append(Point(codec, f"q{qualities[best]}", data, decoded, n, note))
    return points


# ---- the whole comparison ---------------------------------------------------------------------
@dataclass
class Row:
    """One blendae point and the WebP and AVIF files nearest to it in size."""

    blendae: Point
    webp: Point
    avif: Point


def compare(pixels: np.ndarray, quality: int | None = None) -> list[Row]:
    """Every shipped blendae point (variable-rate models at `quality`), each with its
    nearest-size WebP and AVIF."""
    return rows_of(pixels, blendae_points(pixels, quality))


def rows_of(pixels: np.ndarray, ours: list[Point]) -> list[Row]:
    """Each blendae point with the WebP and AVIF files nearest to it in size."""
    targets = [len(p.data) for p in ours]
    webp = nearest_size(pixels, "webp", targets)
    avif = nearest_size(pixels, "avif", targets)
    return [Row(*row) for row in zip(ours, webp, avif, strict=True)]


def at_quality(pixels: np.ndarray, quality: int | None) -> Row:
    """The slider's row: the variable-rate model at `quality` (default: its own) with the
    WebP and AVIF files nearest in size."""
    name = slider_model()
    if name is None:
        raise UploadError("no shipped model codes at a chosen quality")
    (row,) = rows_of(pixels, [blendae_point(pixels, name, quality)])
    return row


def shipped_models() -> list[dict[str, Any]]:
    """Name, the recorded test bpp/PSNR and (variable-rate models) the default quality and
    measured quality scale of every shipped model, for the page's legend and slider."""
    out = []
    for name, meta in offered().items():
        final = meta.get("final_metrics", {})
        out.append(
            {
                "name": name,
                "default": name == DEFAULT,
                "test_bpp": final.get("test_bpp"),
                "test_psnr": final.get("test_psnr"),
                "quality": meta.get("quality"),  # None: one fixed rate
                "qualities": meta.get("qualities"),
            }
        )
    return out
