"""The codec on blends it was not trained for: the same sources, mixed differently.

The zoo is trained on CIFAR-10 image i + MNIST digit i. Here the test split's sources are
blended in other ways (unit preset, (photo + digit) / 2):
- "test blends": as trained (the reference);
- "shuffled pairs": each photo with another image's digit;
- "flipped photo, rotated digit": the photo mirrored, the digit turned 90°;
- "inverted digits": the digit transposed and inverted (dark strokes on white: the blend's
  statistics move furthest from training).

For each set: blendae's q3 point and the BD-rate (monotone cubic, over the shared PSNR
range) of the shipped zoo against WebP `method=6`, AVIF's payload (speed 0, tune psnr) and
every earlier zoo in benchmarks/baseline; bits from whole files, as in `benchmarks.rd`.

    python -m benchmarks.shifted_blends [--limit 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import header
from benchmarks.rd import (
    AVIF_QUALITIES,
    AVIF_SWEEP,
    BASELINE,
    WEBP_QUALITIES,
    Point,
    avif,
    bd_or_reason,
    mdat_payload_size,
    measure,
    percent,
    pillow,
)
from blendae import codec as api
from blendae.data import load_blended


def blends(cifar: Tensor, mnist: Tensor, seed: int = 1) -> dict[str, Tensor]:
    """Name → (N, 3, 32, 32) blends in [0, 1] of photos (N, 3) and digits (N, 1)."""
    perm = torch.randperm(len(mnist), generator=torch.Generator().manual_seed(seed))
    return {
        "test blends": (cifar + mnist) / 2,
        "shuffled pairs": (cifar + mnist[perm]) / 2,
        "flipped photo, rotated digit": (cifar.flip(3) + torch.rot90(mnist, 1, (2, 3))) / 2,
        "inverted digits": (cifar + 1 - mnist.transpose(2, 3)) / 2,
    }


def to_uint8(x: Tensor) -> np.ndarray:
    pixels = (x.expand(-1, 3, -1, -1) * 255).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def zoo_points(family: str, models: list[str], images: np.ndarray) -> list[Point]:
    points: list[Point] = []
    for model in models:
        points += measure(
            family,
            model,
            images,
            lambda ims, m=model: api.compress_batch(list(ims), m),
            lambda fs, m=model: api.decompress_batch(fs, m),
        )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=300, help="test images per set")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(header(f"the codec on differently blended test images ({args.limit} per set)"))
    sources = load_blended("unit", mirror=args.mirror, progress=False, sources=True).sources
    assert sources is not None
    test = sources["test"]
    sets = blends(test.cifar[: args.limit], test.mnist[: args.limit])
    avif_setting = AVIF_SWEEP[next(iter(AVIF_SWEEP))]
    baselines = {
        f"blendae-{folder.name}": sorted(str(p) for p in folder.glob("q*.json"))
        for folder in sorted(BASELINE.iterdir())
        if folder.is_dir()
    }
    for name, x in sets.items():
        images = to_uint8(x)
        ours = zoo_points("blendae", list(api.zoo_entries()), images)
        anchors: dict[str, list[Point]] = {"webp-m6": [], "avif-payload": []}
        for q in WEBP_QUALITIES:
            webp = pillow("WEBP", quality=q, method=6)
            anchors["webp-m6"] += measure("webp-m6", f"q{q}", images, *webp)
        for q in AVIF_QUALITIES:
            encode, decode = avif(q, avif_setting)
            payload = ("avif-payload", mdat_payload_size)
            points = measure("avif", f"q{q}", images, encode, decode, payload)
            anchors["avif-payload"].append(points[1])
        for family, models in baselines.items():
            anchors[family] = zoo_points(family, models, images)
        q3 = next(p for p in ours if p.setting == "q3")
        print(f"\n{name}: blendae q3 {q3.bpp:.3f} bpp / {q3.psnr:.2f} dB")
        for anchor, points in anchors.items():
            print(f"  BD-rate vs {anchor:28} {percent(bd_or_reason(points, ours))}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
