"""Rate–distortion of the shipped codec models against Pillow's JPEG and WebP.

On the blended test set (`unit` preset, 0..255 pixels): bits per pixel from whole files,
per image (header included); PSNR over the set = 10·log10(255² / MSE), MSE averaged over all
pixels of all images (not a mean of per-image PSNRs); encode and decode images per second
(the codec batched, Pillow one image at a time). Prints a table, the Bjøntegaard delta rate
against WebP, and writes the RD plot. The last line is exactly `bd-rate-vs-webp P%`.

    python -m benchmarks.rd [--limit 1000] [--quick] [--plot docs/rd.png] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import header
from blendae import codec as api
from blendae.data import load_blended, to_pixels
from blendae.evaluation import plots  # noqa: F401  # selects matplotlib's file-only backend
from blendae.files import atomic_write

JPEG_QUALITIES = (10, 30, 50, 75, 90)
WEBP_QUALITIES = (0, 5, 25, 50, 75, 90, 95)


@dataclass
class Point:
    codec: str
    setting: str
    bpp: float
    psnr: float
    encode_per_s: float
    decode_per_s: float


def psnr_over_set(images: np.ndarray, decoded: np.ndarray) -> float:
    mse = np.mean((decoded.astype(np.float64) - images.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def measure(codec: str, setting: str, images: np.ndarray, encode, decode) -> Point:
    """Time `encode(images) -> list[bytes]` and `decode(files) -> images`; score the result."""
    t0 = time.perf_counter()
    files = encode(images)
    t1 = time.perf_counter()
    decoded = np.stack(decode(files))
    t2 = time.perf_counter()
    n, h, w = images.shape[:3]
    bpp = float(np.mean([len(f) * 8 / (h * w) for f in files]))
    return Point(codec, setting, bpp, psnr_over_set(images, decoded), n / (t1 - t0), n / (t2 - t1))


def pillow(fmt: str, quality: int):
    def encode(images: np.ndarray) -> list[bytes]:
        out = []
        for image in images:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format=fmt, quality=quality)
            out.append(buf.getvalue())
        return out

    def decode(files: list[bytes]) -> list[np.ndarray]:
        return [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]

    return encode, decode


def _pchip(x: np.ndarray, y: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch–Carlson) of y(x) at xs."""
    h, d = np.diff(x), np.diff(y) / np.diff(x)
    m = np.concatenate([d[:1], np.zeros(len(x) - 2), d[-1:]])
    for k in range(1, len(x) - 1):
        if d[k - 1] * d[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            m[k] = (w1 + w2) / (w1 / d[k - 1] + w2 / d[k])
    i = np.clip(np.searchsorted(x, xs) - 1, 0, len(x) - 2)
    t = (xs - x[i]) / h[i]
    return (
        (2 * t**3 - 3 * t**2 + 1) * y[i]
        + (t**3 - 2 * t**2 + t) * h[i] * m[i]
        + (-2 * t**3 + 3 * t**2) * y[i + 1]
        + (t**3 - t**2) * h[i] * m[i + 1]
    )


def bd_rate(anchor: list[Point], test: list[Point], method: str = "pchip") -> float:
    """Bjøntegaard delta rate in %: the mean gap in log(bpp) at equal PSNR, over the PSNR
    interval both curves cover; negative means fewer bits than the anchor.

    "pchip": monotone piecewise-cubic interpolation through the points (Bjøntegaard's 2008
    update, as in JVET's tools); "cubic": the original VCEG-M33 least-squares cubic fit.
    """
    curves = []
    for points in (anchor, test):
        pts = sorted(points, key=lambda p: p.psnr)
        curves.append((np.array([p.psnr for p in pts]), np.log([p.bpp for p in pts])))
    lo = max(c[0].min() for c in curves)
    hi = min(c[0].max() for c in curves)
    if lo >= hi:
        raise SystemExit("the curves share no PSNR range: no BD-rate")
    grid = np.linspace(lo, hi, 2001)
    if method == "pchip":
        gaps = _pchip(*curves[1], grid) - _pchip(*curves[0], grid)
    else:
        fits = [np.polyfit(x, y, min(3, len(x) - 1)) for x, y in curves]
        gaps = np.polyval(fits[1], grid) - np.polyval(fits[0], grid)
    return float((np.exp(np.mean(gaps)) - 1) * 100)


def split_low_rate(points: list[Point], anchor: list[Point]) -> tuple[list[Point], list[Point]]:
    """Points used for BD (the anchor's rate range plus one point past each end) and the
    low-rate points below that, which are reported on their own."""
    lo = min(p.bpp for p in anchor)
    below = sorted((p for p in points if p.bpp < lo), key=lambda p: p.bpp)
    used = [p for p in points if p.bpp >= lo] + below[-1:]
    return sorted(used, key=lambda p: p.bpp), below[:-1]


def plot(points: list[Point], path: Path) -> None:
    import matplotlib.pyplot as plt

    xmax = 4.5  # the 0.7–2.5 bpp region matters; JPEG (headers dominate at 32×32) is beyond
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, style in (("blendae", "o-"), ("webp", "s--"), ("jpeg", "^:")):
        pts = sorted((p for p in points if p.codec == name), key=lambda p: p.bpp)
        if pts:
            label = name if pts[0].bpp < xmax else f"{name} ({pts[0].bpp:.1f}+ bpp, off the plot)"
            ax.plot([p.bpp for p in pts], [p.psnr for p in pts], style, label=label)
            for p in pts:
                ax.annotate(
                    p.setting,
                    (p.bpp, p.psnr),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
    ax.set_xlim(0, xmax)
    ax.set_xlabel("bits per pixel (whole files, 32×32 images)")
    ax.set_ylabel("PSNR over the set (dB)")
    ax.set_title("blended CIFAR-10/MNIST test images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--quick", action="store_true", help="200 images, WebP and blendae only")
    parser.add_argument("--plot", type=Path, default=Path("docs/rd.png"))
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    # 1 thread: on this shared 2-core machine two threads ran the codec ~2-3x slower.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = min(args.limit, 200) if args.quick else args.limit

    splits = load_blended("unit", mirror=args.mirror, progress=False)
    pixels = to_pixels(splits.test[:limit], "unit").round().clamp(0, 255).to(torch.uint8)
    images = np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())  # (N, 32, 32, 3)
    print(header(f"rate-distortion on {len(images)} blended test images 32x32"), file=sys.stderr)
    print(f"Pillow {Image.__version__}", file=sys.stderr)

    points: list[Point] = []
    for name in api.zoo_entries():
        api.compress(images[0], name)  # load and warm up outside the timing
        points.append(
            measure(
                "blendae",
                name,
                images,
                lambda ims, n=name: api.compress_batch(list(ims), n),
                lambda fs: api.decompress_batch(fs),
            )
        )
    for q in WEBP_QUALITIES:
        points.append(measure("webp", f"q{q}", images, *pillow("WEBP", q)))
    if not args.quick:
        for q in JPEG_QUALITIES:
            points.append(measure("jpeg", f"q{q}", images, *pillow("JPEG", q)))

    columns = ("codec", "setting", "bpp", "PSNR dB", "enc img/s", "dec img/s")
    print("{:8} {:8} {:>6} {:>8} {:>10} {:>10}".format(*columns))
    for p in points:
        print(
            f"{p.codec:8} {p.setting:8} {p.bpp:6.3f} {p.psnr:8.2f} "
            f"{p.encode_per_s:10.0f} {p.decode_per_s:10.0f}"
        )

    ours = [p for p in points if p.codec == "blendae"]
    webp = [p for p in points if p.codec == "webp"]
    used, low = split_low_rate(ours, webp)
    shared = (
        max(min(p.bpp for p in used), min(p.bpp for p in webp)),
        min(max(p.bpp for p in used), max(p.bpp for p in webp)),
    )
    print(
        f"shared rate range {shared[0]:.2f}–{shared[1]:.2f} bpp "
        f"({'includes' if shared[0] <= 1.0 and shared[1] >= 2.0 else 'DOES NOT include'} "
        f"1.0–2.0); BD over blendae {', '.join(p.setting for p in used)}"
    )
    for p in low:
        print(f"low-rate point below WebP's range: {p.setting} {p.bpp:.3f} bpp {p.psnr:.2f} dB")
    if not args.quick:
        plot(points, args.plot)
        print(f"wrote {args.plot}")
    print(f"BD-rate vs WebP with VCEG-M33 cubic fits: {bd_rate(webp, used, 'cubic'):.1f}%")
    print(f"bd-rate-vs-webp {bd_rate(webp, used):.1f}%")


if __name__ == "__main__":
    main()
