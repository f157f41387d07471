"""Rate–distortion of the shipped codec models against WebP, AVIF, JPEG 2000 and JPEG.

On the blended test set (`unit` preset, 0..255 pixels): bits per pixel from whole files,
per image (header included), and for AVIF also from the `mdat` payload alone (the AV1
data, without the ~275-byte ISO-BMFF container); PSNR over the set = 10·log10(255² / MSE),
MSE averaged over all pixels of all images (not a mean of per-image PSNRs); encode and
decode images per second (the codec batched, Pillow one image at a time, one thread). The
codec runs as the command line runs it, after `blendae.allocator.keep_freed_memory`
(`--glibc-defaults`: without; `benchmarks/allocator.py` times the difference).

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

`--all-sets` asks how far the study's numbers carry to other images: the default zoo, WebP
`method=6` and AVIF's payload on the first 1,000 (`--quick`: 100) test images of each of
ALL_SETS (other pairings, each source alone, and shifted_blends' transposed, inverted
digits), with the BD-rates and blendae's saving at AVIF's top two points, where its margin
is thinnest; it ends with one line per set, exactly `bd SET vs-webp P% vs-avif-payload P%`.

    python -m benchmarks.rd [--limit 1000] [--quick] [--plot docs/rd.png] [--threads 1]
    python -m benchmarks.rd --all-sets --quick --threads 2  # ≤ 3 min on 2 cores
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.blend_variants import variant_images
from benchmarks.common import header
from blendae import codec as api
from blendae.allocator import keep_freed_memory
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
# --all-sets: the study's pairing, another digit set, each source alone, and a shift.
SHIFTED_SET = "blend:cifar10+mnist:transposed-inverted"
SHIFTED_VARIANT = "inverted digits"  # its name in benchmarks.blend_variants.blends
ALL_SETS = (
    STUDY,
    "blend:cifar10+fashion-mnist",
    "cifar10",
    "mnist",
    "fashion-mnist",
    SHIFTED_SET,
)
MIN_SHARED_DB = 1.0  # a BD-rate over less shared PSNR than this is not reported
GENERAL_QUALITIES = tuple(range(0, 101, 10))  # the variable-rate model's points

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


def pillow(fmt: str, workers: int = 1, **options) -> tuple[Encode, Decode]:
    """Pillow's coder of `fmt` with `options`, one image at a time; `workers` > 1 encodes
    that many images at once (Pillow releases the GIL while it codes: the same bytes, in
    about half the time on 2 cores), for runs that report no speed."""

    def encode_one(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, **options)
        return buf.getvalue()

    def encode(images: np.ndarray) -> list[bytes]:
        if workers == 1:
            return [encode_one(image) for image in images]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(encode_one, images))

    def decode(files: list[bytes]) -> list[np.ndarray]:
        return [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]

    return encode, decode


def avif(quality: int, setting: dict, workers: int = 1) -> tuple[Encode, Decode]:
    return pillow("AVIF", workers, quality=quality, subsampling="4:4:4", max_threads=1, **setting)


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


def families() -> dict[str, list[tuple[str, int | None]]]:
    """The shipped codecs by family: label → its points, (model, quality or None). The
    variable-rate general model is one family, coded at GENERAL_QUALITIES; the fixed-rate
    blend zoo (q0..q4) is another."""
    found: dict[str, list[tuple[str, int | None]]] = {}
    for name, meta in api.zoo_entries().items():
        if meta.get("model") == "gained":
            found[f"blendae-{name}"] = [(name, q) for q in GENERAL_QUALITIES]
        else:
            found.setdefault("blendae-blend", []).append((name, None))
    return found


def zoo_points(
    family: str, models: list[str] | list[tuple[str, int | None]], images: np.ndarray
) -> list[Point]:
    """Code `images` with each model (a zoo name or a model's .json, with its quality for a
    variable-rate model), labelled `family`."""
    points: list[Point] = []
    for entry in models:
        model, quality = entry if isinstance(entry, tuple) else (entry, None)
        points += measure(
            family,
            Path(model).stem if quality is None else f"q{quality}",
            images,
            lambda ims, m=model, q=quality: api.compress_batch(list(ims), m, q),
            lambda fs, m=model: api.decompress_batch(fs, m),
        )
    return points


def blendae_points(images: np.ndarray, baselines: bool) -> list[Point]:
    """The shipped codecs, family by family, and (with `baselines`) the earlier zoos."""
    points: list[Point] = []
    for label, members in families().items():
        points += zoo_points(label, members, images)
    if baselines:
        for folder in sorted(p for p in BASELINE.iterdir() if p.is_dir()):
            models = sorted(str(p) for p in folder.glob("q*.json"))
            points += zoo_points(f"blendae-{folder.name}", models, images)
    return points


def anchor_points(images: np.ndarray, avif_name: str, quick: bool, workers: int = 1) -> list[Point]:
    """WebP `method=6` and AVIF (file and payload), encoded by `workers` threads; without
    `quick` also WebP's default `method=4`, JPEG 2000 and JPEG."""
    points: list[Point] = []
    for q in WEBP_QUALITIES:
        webp = pillow("WEBP", workers, quality=q, method=6)
        points += measure("webp-m6", f"q{q}", images, *webp)
    for q in AVIF_QUALITIES:
        encode, decode = avif(q, AVIF_SWEEP[avif_name], workers)
        points += measure(
            "avif-file", f"q{q}", images, encode, decode, ("avif-payload", mdat_payload_size)
        )
    if not quick:
        for q in WEBP_QUALITIES:
            points += measure("webp-m4", f"q{q}", images, *pillow("WEBP", quality=q))
        for db in J2K_PSNR_TARGETS:
            points += measure("j2k", f"{db}dB", images, *jpeg2000(db))
        for q in JPEG_QUALITIES:
            points += measure("jpeg", f"q{q}", images, *pillow("JPEG", quality=q))
    return points


def main_family() -> str:
    """The family of the default model: the one the final lines report."""
    return next(f for f, members in families().items() if api.DEFAULT in dict(members))


def by_codec(points: list[Point]) -> dict[str, list[Point]]:
    """Points by codec, in first-measured order: each codec's curve for the BD-rates."""
    grouped: dict[str, list[Point]] = {}
    for p in points:
        grouped.setdefault(p.codec, []).append(p)
    return grouped


def print_table(points: list[Point]) -> None:
    """Every point with its speed: the numbers behind the curves and the README's table."""
    columns = ("codec", "setting", "bpp", "PSNR dB", "enc img/s", "dec img/s")
    print("{:16} {:8} {:>6} {:>8} {:>10} {:>10}".format(*columns))
    for p in points:
        print(
            f"{p.codec:16} {p.setting:8} {p.bpp:6.3f} {p.psnr:8.2f} "
            f"{p.encode_per_s:10.0f} {p.decode_per_s:10.0f}"
        )


def print_speed(grouped: dict[str, list[Point]]) -> None:
    base_enc, base_dec = speed(grouped["webp-m6"])
    print("speed over all settings (img/s; blendae batched, Pillow one image at a time):")
    for name, pts in grouped.items():
        if name == "avif-payload":
            continue  # the same runs as avif-file
        enc, dec = speed(pts)
        print(
            f"  {name:16} encode {enc:8.0f} ({enc / base_enc:5.2f}x webp-m6)"
            f"  decode {dec:8.0f} ({dec / base_dec:5.2f}x webp-m6)"
        )


def print_bd(grouped: dict[str, list[Point]]) -> dict[tuple[str, str], float | str]:
    """Print every blendae family's BD-rate against every anchor; return them by
    (family, anchor)."""
    ours = {name: pts for name, pts in grouped.items() if name.startswith("blendae")}
    print("BD-rate (monotone cubic interpolation of log bpp over PSNR; shared PSNR range):")
    results: dict[tuple[str, str], float | str] = {}
    for fam, test in ours.items():
        for anchor_name, anchor in grouped.items():
            if anchor_name in ours:
                continue
            results[fam, anchor_name] = bd = bd_or_reason(anchor, test)
            lo, hi = shared_psnr(anchor, test)
            print(f"  {fam} vs {anchor_name:13} {percent(bd):>8}   over {lo:.2f}–{hi:.2f} dB")
    return results


def size_ratio(point: Point, anchor: list[Point]) -> float | None:
    """point's bpp over the anchor's bpp at point's PSNR (log-bpp interpolated between the
    anchor's two nearest settings); None when the anchor's settings do not reach it."""
    pts = sorted(anchor, key=lambda p: p.psnr)
    for lo, hi in itertools.pairwise(pts):
        if lo.psnr <= point.psnr <= hi.psnr and hi.psnr > lo.psnr:
            t = (point.psnr - lo.psnr) / (hi.psnr - lo.psnr)
            bpp = math.exp(math.log(lo.bpp) + t * (math.log(hi.bpp) - math.log(lo.bpp)))
            return point.bpp / bpp
    return None


def saving_line(anchor: list[Point], ours: list[Point], top: int = 2) -> str:
    """blendae's bit saving at the anchor's `top` highest-PSNR points, blendae's bpp
    log-linearly interpolated between its two nearest points (the README's "at AVIF's own
    points" figures): where blendae's margin is thinnest."""
    cells = []
    for p in sorted(anchor, key=lambda p: p.psnr)[-top:]:
        ratio = size_ratio(p, ours)  # the anchor's bits over blendae's
        if ratio is None:
            lo, hi = min(o.psnr for o in ours), max(o.psnr for o in ours)
            cells.append(f"{p.setting} {p.psnr:.2f} dB: outside blendae's {lo:.2f}–{hi:.2f} dB")
            continue
        saving = (1 - 1 / ratio) * 100
        more = "fewer" if saving >= 0 else "more"
        cells.append(f"{p.setting} {p.psnr:.2f} dB: {abs(saving):.1f}% {more} bits")
    return "; ".join(cells)


def bd_line(name: str, webp: float | str, avif_payload: float | str) -> str:
    """The summary line of one set: `bd SET vs-webp P% vs-avif-payload P%`."""
    return f"bd {name} vs-webp {percent(webp)} vs-avif-payload {percent(avif_payload)}"


def set_images(name: str, limit: int, mirror: str | None) -> np.ndarray:
    """The first `limit` test images of one of ALL_SETS (or any `--data` spec) as uint8 RGB."""
    if name == SHIFTED_SET:
        return variant_images(SHIFTED_VARIANT, limit, mirror)
    return test_images(name, limit, mirror)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_IMAGES} images (a set); blendae, WebP method=6 and AVIF only (≤ 90 s; "
        "with --all-sets ≤ 3 min at 2 threads)",
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/rd.png"))
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    parser.add_argument(
        "--data", default=STUDY, help=f"whose test split to code (default {STUDY}; any --data SPEC)"
    )
    parser.add_argument(
        "--all-sets",
        action="store_true",
        help=f"the default zoo, WebP method=6 and AVIF's payload on each of {', '.join(ALL_SETS)}",
    )
    # 1 thread: on this shared 2-core machine two threads ran the codec ~2-3x slower.
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1); with --all-sets also Pillow's encoding threads",
    )
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's allocator thresholds as they are (by default the codec runs as "
        "the command line runs it, after blendae.allocator.keep_freed_memory)",
    )
    return parser.parse_args()


def run_one(args: argparse.Namespace, limit: int) -> None:
    """Every codec on one `--data` set: table, speed, BD-rates, plot, the two final lines."""
    images = test_images(args.data, limit, args.mirror)
    print(
        header(f"rate-distortion on {len(images)} {args.data} test images 32x32"), file=sys.stderr
    )
    print(f"Pillow {Image.__version__}", file=sys.stderr)
    avif_name = next(iter(AVIF_SWEEP))
    if not args.quick:
        avif_name = choose_avif(images[:AVIF_SWEEP_IMAGES])
    print(f"AVIF anchor: 4:4:4, {avif_name}, max_threads=1 (libavif + aom)")
    points = blendae_points(images, baselines=True) + anchor_points(images, avif_name, args.quick)
    print_table(points)
    grouped = by_codec(points)
    print_speed(grouped)
    results = print_bd(grouped)
    fam = main_family()
    cubic = bd_or_reason(grouped["webp-m6"], grouped[fam], "cubic")
    print(f"{fam} vs webp-m6 with VCEG-M33 cubic fits: {percent(cubic)}")
    if not args.quick:
        plot(points, args.plot)
        print(f"wrote {args.plot}")
    for anchor_name, label in (("avif-payload", "avif-payload"), ("webp-m6", "webp")):
        bd = results[fam, anchor_name]
        print(
            f"bd-rate-vs-{label} {bd:.1f}%" if isinstance(bd, float) else f"bd-rate-vs-{label} {bd}"
        )


def run_all_sets(args: argparse.Namespace, limit: int) -> None:
    """The shipped codecs, WebP `method=6` and AVIF on each of ALL_SETS; one `bd` line per
    set for the default (general) model at the end, after the specialised blend zoo's.

    The AVIF anchor is the full run's choice on the study's blends (speed 0, tune psnr),
    not re-chosen per set. No speed lines: Pillow encodes on `--threads` threads here, so
    that 6 sets of AVIF at speed 0 fit in 3 minutes on 2 cores.
    """
    print(header(f"rate-distortion on the first {limit} test images of each set"), file=sys.stderr)
    print(f"Pillow {Image.__version__}", file=sys.stderr)
    avif_name = next(iter(AVIF_SWEEP))
    print(f"AVIF anchor: 4:4:4, {avif_name}, max_threads=1 (libavif + aom)")
    fam = main_family()
    shipped = families()
    summary, specialised = [], []
    for name in ALL_SETS:
        images = set_images(name, limit, args.mirror)
        print(f"\n## {name}: {len(images)} images")
        anchors = anchor_points(images, avif_name, quick=True, workers=max(args.threads, 1))
        points = [p for f, members in shipped.items() for p in zoo_points(f, members, images)]
        grouped = by_codec(points + anchors)
        for p in points + anchors:
            print(f"  {p.codec:14} {p.setting:4} {p.bpp:6.3f} bpp {p.psnr:6.2f} dB")
        bd = print_bd(grouped)
        for family in shipped:
            saving = saving_line(grouped["avif-payload"], grouped[family])
            print(f"{family} vs avif-payload at AVIF's top two points: {saving}")
            if family != fam:
                line = bd_line(name, bd[family, "webp-m6"], bd[family, "avif-payload"])
                specialised.append(f"{family}: {line}")
        summary.append(bd_line(name, bd[fam, "webp-m6"], bd[fam, "avif-payload"]))
        sys.stdout.flush()
    print()
    print("\n".join(specialised))
    print(f"{fam} (the default model):")
    print("\n".join(summary))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = not args.glibc_defaults and keep_freed_memory()
    print(f"allocator: {'glibc, keep_freed_memory (as the CLI)' if kept else 'as it was'}")
    limit = min(args.limit, QUICK_IMAGES) if args.quick else args.limit
    if args.all_sets:
        run_all_sets(args, limit)
    else:
        run_one(args, limit)


if __name__ == "__main__":
    main()
