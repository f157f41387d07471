"""Rate–distortion of the shipped codec models against WebP, AVIF, JPEG 2000 and JPEG.

On the blended test set (`unit` preset, 0..255 pixels): bits per pixel from whole files,
per image (header included), and for AVIF also from the `mdat` payload alone (the AV1
data, without the ~275-byte ISO-BMFF container); PSNR over the set = 10·log10(255² / MSE),
MSE averaged over all pixels of all images (not a mean of per-image PSNRs); encode and
decode images per second (the codec batched, Pillow one image at a time, one thread).

Anchors (Pillow):
- WebP at `method=6` (its strongest), and Pillow's default `method=4` (full run only, the
  anchor of earlier numbers);
- AVIF (libavif + aom) 4:4:4 at speed 0 with `tune=psnr`: the best PSNR per bit of the
  speeds/tunes measured here (the full run re-measures three settings on a subset and
  uses the best); bpp from whole files ("avif-file") and from the payload ("avif-payload");
- JPEG 2000: a raw codestream (`no_jp2=True`), 9/7 irreversible wavelet with the colour
  transform on (`mct=1`), 3 resolution levels (at 32×32 the default 6 costs ~20 % more
  bits at equal PSNR), one quality layer per PSNR target (`quality_mode="dB"`);
- JPEG (libjpeg-turbo, 4:2:0).

Prints a table, the speed of each codec and its ratio to WebP `method=6`, the Bjøntegaard
delta rate of every blendae model family against every anchor over their shared PSNR range
(or why not), and writes the RD plot. The last two lines are exactly
`bd-rate-vs-avif-payload P%` and `bd-rate-vs-webp P%` (WebP `method=6`).

    python -m benchmarks.rd [--limit 1000] [--quick] [--plot docs/rd.png] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import header
from blendae import codec as api
from blendae.data import STUDY, load_data, to_pixels
from blendae.evaluation import plots  # noqa: F401  # selects matplotlib's file-only backend
from blendae.files import atomic_write

JPEG_QUALITIES = (10, 30, 50, 75, 90)
WEBP_QUALITIES = (0, 5, 25, 50, 75, 90, 95)
AVIF_QUALITIES = (20, 30, 40, 50, 60)
J2K_PSNR_TARGETS = (26, 28, 30, 32, 34, 36, 38, 40)
QUICK_IMAGES = 100  # --quick: AVIF at speed 0 codes ~15 images/s here, and it must end in 90 s

# AVIF settings compared by the full run on AVIF_SWEEP_IMAGES images; the first is the
# anchor unless another one measures fewer payload bits at equal PSNR.
AVIF_SWEEP: dict[str, dict] = {
    "speed 0, tune psnr": {"speed": 0, "advanced": {"tune": "psnr"}},
    "speed 4, tune psnr": {"speed": 4, "advanced": {"tune": "psnr"}},
    "speed 6, default tune": {"speed": 6},
}
AVIF_SWEEP_IMAGES = 200
AVIF_SWEEP_QUALITIES = (30, 50)
# Earlier zoos, kept as baseline families: baseline/factorized-0.2 (Ballé 2017 factorized
# prior, float decoding), baseline/hyperprior-0.3 (the mean-scale hyperprior without the
# context) and baseline/checkerboard-0.4 (the same architecture as today's, 20 epochs less).
BASELINE = Path(__file__).with_name("baseline")
MIN_SHARED_DB = 1.0  # a BD-rate over less shared PSNR than this is not reported

Encode = Callable[[np.ndarray], list[bytes]]
Decode = Callable[[list[bytes]], list[np.ndarray]]


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


def mdat_payload_size(data: bytes) -> int:
    """Bytes of payload in the top-level `mdat` boxes of an ISO-BMFF file (AVIF, HEIF, MP4).

    Walks the top-level boxes: a 32-bit size (big-endian, counting the header) and a 4-byte
    type; size 1 means a 64-bit `largesize` follows the type, size 0 means the box runs to
    the end of the file. The file must start with an `ftyp` box and hold at least one
    `mdat`. Truncated or inconsistent input raises ValueError.
    """
    data = bytes(data)
    total, found, pos, end = 0, False, 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise ValueError(f"truncated box header at byte {pos}")
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        head = 8
        if size == 1:
            if end - pos < 16:
                raise ValueError(f"truncated 64-bit box size at byte {pos}")
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            head = 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise ValueError(f"box {kind!r} at byte {pos} declares {size} bytes, under its header")
        if size > end - pos:
            raise ValueError(
                f"box {kind!r} at byte {pos} runs {size - (end - pos)} bytes past the end"
            )
        if pos == 0 and kind != b"ftyp":
            raise ValueError(f"not ISO-BMFF: the first box is {kind!r}, not b'ftyp'")
        if kind == b"mdat":
            total += size - head
            found = True
        pos += size
    if not found:
        raise ValueError("no top-level mdat box" if end else "empty input")
    return total


def measure(
    codec: str,
    setting: str,
    images: np.ndarray,
    encode: Encode,
    decode: Decode,
    payload: tuple[str, Callable[[bytes], int]] | None = None,
) -> list[Point]:
    """Time `encode(images) -> list[bytes]` and `decode(files) -> images`; score the result.

    With `payload=(codec name, size of a file's payload)`, a second point scores the same
    files by that size instead of their length.
    """
    decode(encode(images[:1]))  # load libraries and warm up outside the timing
    t0 = time.perf_counter()
    files = encode(images)
    t1 = time.perf_counter()
    decoded = np.stack(decode(files))
    t2 = time.perf_counter()
    n, h, w = images.shape[:3]
    psnr, enc, dec = psnr_over_set(images, decoded), n / (t1 - t0), n / (t2 - t1)
    sizes = [(codec, len)] + ([payload] if payload else [])
    return [
        Point(name, setting, float(np.mean([size(f) * 8 / (h * w) for f in files])), psnr, enc, dec)
        for name, size in sizes
    ]


def pillow(fmt: str, **options) -> tuple[Encode, Decode]:
    def encode(images: np.ndarray) -> list[bytes]:
        out = []
        for image in images:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format=fmt, **options)
            out.append(buf.getvalue())
        return out

    def decode(files: list[bytes]) -> list[np.ndarray]:
        return [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]

    return encode, decode


def avif(quality: int, setting: dict) -> tuple[Encode, Decode]:
    return pillow("AVIF", quality=quality, subsampling="4:4:4", max_threads=1, **setting)


def jpeg2000(psnr_target: float) -> tuple[Encode, Decode]:
    return pillow(
        "JPEG2000",
        no_jp2=True,
        irreversible=True,
        mct=1,
        num_resolutions=3,
        quality_mode="dB",
        quality_layers=[psnr_target],
    )


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


def shared_psnr(anchor: list[Point], test: list[Point]) -> tuple[float, float]:
    """The PSNR interval both point sets cover (empty when lo >= hi)."""
    return max(min(p.psnr for p in s) for s in (anchor, test)), min(
        max(p.psnr for p in s) for s in (anchor, test)
    )


def bd_or_reason(anchor: list[Point], test: list[Point], method: str = "pchip") -> float | str:
    """The BD-rate in %, or a sentence saying why the curves overlap too little for one."""
    if len(anchor) < 2 or len(test) < 2:
        return "n/a: fewer than 2 points on a curve"
    lo, hi = shared_psnr(anchor, test)
    if hi - lo < MIN_SHARED_DB:
        return (
            f"n/a: shared PSNR range {max(hi - lo, 0):.2f} dB < {MIN_SHARED_DB:.0f} dB "
            f"(anchor {min(p.psnr for p in anchor):.1f}–{max(p.psnr for p in anchor):.1f}, "
            f"test {min(p.psnr for p in test):.1f}–{max(p.psnr for p in test):.1f} dB)"
        )
    return bd_rate(anchor, test, method)


def percent(value: float | str) -> str:
    return f"{value:+.1f}%" if isinstance(value, float) else value


def speed(points: list[Point]) -> tuple[float, float]:
    """Images per second over all of a codec's settings (total images / total time)."""
    return (
        len(points) / sum(1 / p.encode_per_s for p in points),
        len(points) / sum(1 / p.decode_per_s for p in points),
    )


STYLES = {  # codec -> (matplotlib format, extra keyword arguments)
    "webp-m6": ("s-", {"color": "tab:orange"}),
    "webp-m4": ("s:", {"color": "tab:orange", "alpha": 0.4}),
    "avif-payload": ("D--", {"color": "tab:red"}),
    "avif-file": ("D:", {"color": "tab:red"}),
    "j2k": ("v-.", {"color": "tab:brown"}),
    "jpeg": ("^:", {"color": "tab:gray"}),
}


def plot(points: list[Point], path: Path) -> None:
    import matplotlib.pyplot as plt

    xmax = 5.0  # the 0.7–2.5 bpp region matters; JPEG (headers dominate at 32×32) is beyond
    fig, ax = plt.subplots(figsize=(7, 5))
    names = list(dict.fromkeys(p.codec for p in points))
    for name in names:
        pts = sorted((p for p in points if p.codec == name), key=lambda p: p.bpp)
        style, extra = STYLES.get(name, ("o-", {"linewidth": 2, "zorder": 3}))
        on = [p for p in pts if p.bpp <= xmax]
        label = (
            name
            if len(on) == len(pts)
            else f"{name} ({len(pts) - len(on)} points past {xmax:g} bpp)"
        )
        if not on:
            label = f"{name} ({pts[0].bpp:.1f}+ bpp, off the plot)"
        ax.plot(
            [p.bpp for p in pts], [p.psnr for p in pts], style, label=label, markersize=4, **extra
        )
        if name.startswith("blendae"):
            for p in on:
                ax.annotate(
                    p.setting,
                    (p.bpp, p.psnr),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
    ax.set_xlim(0, xmax)
    ax.set_ylim(22, 44)
    ax.set_xlabel("bits per pixel (32×32 images; whole files unless 'payload')")
    ax.set_ylabel("PSNR over the set (dB)")
    ax.set_title("blended CIFAR-10/MNIST test images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def choose_avif(images: np.ndarray) -> str:
    """Measure AVIF_SWEEP on `images`; print it; return the setting with the fewest payload
    bits at equal PSNR (BD-rate against the first)."""
    sweep = {
        name: [
            measure(
                "avif-file", f"q{q}", images, *avif(q, setting), ("avif-payload", mdat_payload_size)
            )[1]
            for q in AVIF_SWEEP_QUALITIES
        ]
        for name, setting in AVIF_SWEEP.items()
    }
    first = next(iter(sweep))
    print(f"AVIF 4:4:4 settings on {len(images)} images (payload bpp / PSNR dB, encode img/s):")
    scores = {}
    for name, pts in sweep.items():
        scores[name] = 0.0 if name == first else bd_or_reason(sweep[first], pts)
        cells = ", ".join(
            f"{p.setting} {p.bpp:.3f}/{p.psnr:.2f} {p.encode_per_s:.0f}/s" for p in pts
        )
        rel = "" if name == first else f"; BD-rate vs {first}: {percent(scores[name])}"
        print(f"  {name:22} {cells}{rel}")
    best = min((n for n, s in scores.items() if isinstance(s, float)), key=lambda n: scores[n])
    return best


def test_images(spec: str, limit: int, mirror: str | None) -> np.ndarray:
    """The first `limit` test images of a `--data` spec as uint8 (N, 32, 32, 3): pixels of
    the unit preset (a blend is the pixel mean image), gray copied to RGB for every codec."""
    data = load_data(spec, preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("test", limit, torch.device("cpu"))["x"]
    pixels = to_pixels(x, data.space).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def families() -> dict[str, str]:
    """Shipped model name -> label of its family ("blendae", or "blendae-<model>" when the
    zoo ships several model kinds)."""
    kinds = {name: meta.get("model", "?") for name, meta in api.zoo_entries().items()}
    if len(set(kinds.values())) <= 1:
        return dict.fromkeys(kinds, "blendae")
    return {name: f"blendae-{kind}" for name, kind in kinds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_IMAGES} images; blendae, WebP method=6 and AVIF only (≤ 90 s)",
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/rd.png"))
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    parser.add_argument(
        "--data", default=STUDY, help=f"whose test split to code (default {STUDY}; any --data SPEC)"
    )
    # 1 thread: on this shared 2-core machine two threads ran the codec ~2-3x slower.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = min(args.limit, QUICK_IMAGES) if args.quick else args.limit

    images = test_images(args.data, limit, args.mirror)
    print(
        header(f"rate-distortion on {len(images)} {args.data} test images 32x32"), file=sys.stderr
    )
    print(f"Pillow {Image.__version__}", file=sys.stderr)

    avif_name = next(iter(AVIF_SWEEP))
    if not args.quick:
        avif_name = choose_avif(images[:AVIF_SWEEP_IMAGES])
    print(f"AVIF anchor: 4:4:4, {avif_name}, max_threads=1 (libavif + aom)")

    points: list[Point] = []
    family = families()
    for name in family:
        points += measure(
            family[name],
            name,
            images,
            lambda ims, n=name: api.compress_batch(list(ims), n),
            lambda fs: api.decompress_batch(fs),
        )
    for meta_path in sorted(BASELINE.glob("*/q*.json")):
        points += measure(
            f"blendae-{meta_path.parent.name}",
            meta_path.stem,
            images,
            lambda ims, m=str(meta_path): api.compress_batch(list(ims), m),
            lambda fs, m=str(meta_path): api.decompress_batch(fs, m),
        )
    for q in WEBP_QUALITIES:
        points += measure("webp-m6", f"q{q}", images, *pillow("WEBP", quality=q, method=6))
    for q in AVIF_QUALITIES:
        encode, decode = avif(q, AVIF_SWEEP[avif_name])
        points += measure(
            "avif-file", f"q{q}", images, encode, decode, ("avif-payload", mdat_payload_size)
        )
    if not args.quick:
        for q in WEBP_QUALITIES:
            points += measure("webp-m4", f"q{q}", images, *pillow("WEBP", quality=q))
        for db in J2K_PSNR_TARGETS:
            points += measure("j2k", f"{db}dB", images, *jpeg2000(db))
        for q in JPEG_QUALITIES:
            points += measure("jpeg", f"q{q}", images, *pillow("JPEG", quality=q))

    columns = ("codec", "setting", "bpp", "PSNR dB", "enc img/s", "dec img/s")
    print("{:16} {:8} {:>6} {:>8} {:>10} {:>10}".format(*columns))
    for p in points:
        print(
            f"{p.codec:16} {p.setting:8} {p.bpp:6.3f} {p.psnr:8.2f} "
            f"{p.encode_per_s:10.0f} {p.decode_per_s:10.0f}"
        )

    by_codec: dict[str, list[Point]] = {}
    for p in points:
        by_codec.setdefault(p.codec, []).append(p)
    ours = {name: pts for name, pts in by_codec.items() if name.startswith("blendae")}
    anchors = {name: pts for name, pts in by_codec.items() if name not in ours}

    base_enc, base_dec = speed(by_codec["webp-m6"])
    print("speed over all settings (img/s; blendae batched, Pillow one image at a time):")
    for name, pts in by_codec.items():
        if name == "avif-payload":
            continue  # the same runs as avif-file
        enc, dec = speed(pts)
        print(
            f"  {name:16} encode {enc:8.0f} ({enc / base_enc:5.2f}x webp-m6)"
            f"  decode {dec:8.0f} ({dec / base_dec:5.2f}x webp-m6)"
        )

    print("BD-rate (monotone cubic interpolation of log bpp over PSNR; shared PSNR range):")
    results: dict[tuple[str, str], float | str] = {}
    for fam, test in ours.items():
        for anchor_name, anchor in anchors.items():
            results[fam, anchor_name] = bd = bd_or_reason(anchor, test)
            lo, hi = shared_psnr(anchor, test)
            print(f"  {fam} vs {anchor_name:13} {percent(bd):>8}   over {lo:.2f}–{hi:.2f} dB")
    main_family = family.get(api.DEFAULT, next(iter(ours)))
    cubic = bd_or_reason(anchors["webp-m6"], ours[main_family], "cubic")
    print(f"{main_family} vs webp-m6 with VCEG-M33 cubic fits: {percent(cubic)}")
    if not args.quick:
        plot(points, args.plot)
        print(f"wrote {args.plot}")
    for anchor_name, label in (("avif-payload", "avif-payload"), ("webp-m6", "webp")):
        bd = results[main_family, anchor_name]
        print(
            f"bd-rate-vs-{label} {bd:.1f}%" if isinstance(bd, float) else f"bd-rate-vs-{label} {bd}"
        )


if __name__ == "__main__":
    main()
