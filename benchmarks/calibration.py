"""What calibrating the exact decoders' ranges gained: the general model against the one it
replaced (general-0.7, the same weights with the ranges training left), in real files.

1. Where the old ranges cost: on the first 1,000 CIFAR-10 validation images (training images
   45,000 on), the PSNR of the float decoder, of the exact one, and of the exact one with
   only each layer exact in turn, and the bits of y with exact against float entropy
   parameters.
2. Validation images of every set the model trained on (the last --count training images of
   each; the digits also inverted): both models at qualities 0, 10, …, 100, the BD-rate of
   the new one against the old, and both at qualities 0, 60 and 100.
3. Images unlike any training set: uniform noise, 4×4 random colour blocks (the shipped
   models' known failure), and scikit-image's photos coded in patches (if installed).
4. The default quality: the old default (66) and the new one against the blend zoo's q3 on
   the 2,000 validation blends that choose it (`scripts/measure_qualities.py`).
5. Speed: both models coding the first 1,000 study test blends at their default qualities,
   in interleaved rounds (medians). Finer ranges make larger integers, so the exact
   convolutions' one-kernel path (`ExactConv.fits`) is taken less often.

    python -m benchmarks.calibration [--count 1000] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.common import header, interleaved
from benchmarks.rd import Point, bd_or_reason, percent, test_images
from blendae import codec
from blendae.allocator import keep_freed_memory
from blendae.codec.zoo import training_sets
from blendae.data import STUDY, load_data, to_pixels
from blendae.models.exact import RangeTracker

OLD, NEW = "general-0.7", "general"
QUALITIES = tuple(range(0, 101, 10))
VALIDATION = 45_000  # the study's blends and CIFAR-10: training images from here on


def training_tail(spec: str, start: int | None, count: int, mirror: str | None) -> np.ndarray:
    """`count` training images of `spec` from `start` (None: the last `count`), uint8 RGB."""
    data = load_data(spec, preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("train", None, torch.device("cpu"))["x"]
    x = x[-count:] if start is None else x[start : start + count]
    pixels = to_pixels(x, data.space).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def point(images: list[np.ndarray], model: str, quality: int | None) -> Point:
    """Real files: bpp (headers included) and PSNR of their decoding over all pixels."""
    files = codec.compress_batch(images, model, quality)
    decoded = codec.decompress_batch(files, model)
    pairs = zip(decoded, images, strict=True)
    se = sum(float(np.sum((d.astype(np.float64) - i) ** 2)) for d, i in pairs)
    values = sum(i.size for i in images)
    bpp = 8 * sum(map(len, files)) / (values / images[0].shape[-1])
    return Point(model, f"q{quality}", bpp, 10 * math.log10(255**2 * values / se), 0.0, 0.0)


@torch.no_grad()
def where_it_cost(images: np.ndarray) -> None:
    """Part 1, on the old model."""
    model = codec.load_codec(OLD).model
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    def psnr(x_hat: torch.Tensor) -> float:
        mse = float(((x_hat.clamp(0, 1) * 255).round() - x * 255).square().mean())
        return 10 * math.log10(255**2 / mse)

    floats = [m for m in model.g_s if not isinstance(m, RangeTracker)]
    exacts = list(model.g_s_exact.layers)
    for quality in (0, 66, 100):
        model._q = quality
        try:
            y = model._into(model.g_a(x))
            z_hat, _ = model.entropy_bottleneck(model.h_a(y))
            bits = {}
            for exact in (True, False):
                hs = model.h_s_exact(z_hat) if exact else model.h_s(z_hat)
                y_hat, mean, scale = model._mean_scale(y, hs, model._coded, exact=exact)
                lik = model.gaussian.likelihood(y_hat, mean, scale)
                bits[exact] = float(-torch.log2(lik).sum())
            y_hat = model._mean_scale(y, model.h_s_exact(z_hat), model._coded, exact=True)[0]
            v = model._out(y_hat).contiguous(memory_format=torch.channels_last)

            def decode(exact_at: set[int], v: torch.Tensor = v) -> torch.Tensor:
                for i, (f, e) in enumerate(zip(floats, exacts, strict=True)):
                    v = e(v) if i in exact_at else f(v)
                return v

            layers = range(len(floats))
            only = [
                f"{i} {type(floats[i]).__name__} {psnr(decode({i})):.2f}"
                for i in layers
                if not isinstance(floats[i], torch.nn.PixelShuffle)
            ]
        finally:
            model._q = model.quality
        print(
            f"  q{quality}: float decoder {psnr(decode(set())):.2f} dB, exact "
            f"{psnr(decode(set(layers))):.2f} dB; only one layer exact: {', '.join(only)}; "
            f"y bits with exact entropy parameters {100 * (bits[True] / bits[False] - 1):+.2f} %"
        )
    trackers = {
        n: round(float(m.amax), 3)
        for n, m in model.g_s.named_modules()
        if isinstance(m, RangeTracker)
    }
    print(f"  g_s ranges (amax; × 2 headroom): {trackers}")


def compare(name: str, images: list[np.ndarray]) -> None:
    """Part 2 and 3: both models' curves, BD-rate, three points."""
    old = [point(images, OLD, q) for q in QUALITIES]
    new = [point(images, NEW, q) for q in QUALITIES]
    cells = [
        f"q{q} {o.bpp:.3f}/{o.psnr:.2f} -> {n.bpp:.3f}/{n.psnr:.2f}"
        for q, o, n in zip(QUALITIES, old, new, strict=True)
        if q in (0, 60, 100)
    ]
    bd = percent(bd_or_reason(old, new))
    print(f"  {name} ({len(images)}): BD-rate {NEW} vs {OLD} {bd}; {'; '.join(cells)}", flush=True)


def unlike_training() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(200)]
    blocks = [
        np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)
        for _ in range(200)
    ]
    cases = {"uniform noise": noise, "4x4 colour blocks": blocks}
    try:
        import skimage.data as photos
    except ImportError:
        print("  (scikit-image is not installed: no photos)")
        return cases
    for name in ("astronaut", "coffee", "hubble_deep_field", "retina"):
        cases[f"photo {name}"] = [np.ascontiguousarray(getattr(photos, name)()[..., :3])]
    return cases


def speed(images: list[np.ndarray], rounds: int) -> None:
    """Part 5: encode and decode rates (images/s) of both models at their defaults."""
    files = {name: codec.compress_batch(images, name) for name in (OLD, NEW)}

    def rate(work: Callable[[], object]) -> float:
        start = time.perf_counter()
        work()
        return len(images) / (time.perf_counter() - start)

    runs = {}
    for name in (OLD, NEW):
        runs[f"{name} encode"] = lambda n=name: rate(lambda: codec.compress_batch(images, n))
        runs[f"{name} decode"] = lambda n=name: rate(lambda: codec.decompress_batch(files[n], n))
    medians = {k: statistics.median(v) for k, v in interleaved(runs, rounds).items()}
    for what in ("encode", "decode"):
        old, new = medians[f"{OLD} {what}"], medians[f"{NEW} {what}"]
        print(f"  {what}: {NEW} {new:,.0f} images/s, {OLD} {old:,.0f}: {new / old:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="validation images per set")
    parser.add_argument("--rounds", type=int, default=5, help="speed rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print(header(f"{NEW} (calibrated ranges) against {OLD} (training's ranges)"))
    print("1. where the old ranges cost (CIFAR-10, training images 45,000-45,999):")
    where_it_cost(training_tail("cifar10", VALIDATION, 1000, args.mirror))
    print(f"2. validation images (the last {args.count} training images of each set):")
    for spec in training_sets(codec.zoo_entries()[NEW]):
        images = list(training_tail(spec, None, args.count, args.mirror))
        compare(spec, images)
        if spec in ("mnist", "fashion-mnist"):
            compare(f"{spec} inverted", [255 - im for im in images])
    print("3. images unlike the training sets:")
    for name, images in unlike_training().items():
        compare(name, images)
    print("4. the default quality (2,000 validation blends, training images 45,000-46,999):")
    blends = list(training_tail("blend:cifar10+mnist", VALIDATION, 2000, args.mirror))
    default = codec.load_codec(NEW).quality
    for model, quality in (("q3", None), (OLD, 66), (NEW, default - 1), (NEW, default)):
        p = point(blends, model, quality)
        print(f"  {model} {p.setting}: {p.bpp:.3f} bpp, {p.psnr:.2f} dB", flush=True)
    print(f"5. speed, first 1,000 {STUDY} test images, medians of {args.rounds} rounds:")
    speed(list(test_images(STUDY, 1000, args.mirror)), args.rounds)


if __name__ == "__main__":
    main()
