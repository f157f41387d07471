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

import torch

from benchmarks.blend_variants import blends, study_sources, to_uint8
from benchmarks.common import header
from benchmarks.rd import (
    AVIF_QUALITIES,
    AVIF_SWEEP,
    BASELINE,
    WEBP_QUALITIES,
    Point,
    avif,
    bd_or_reason,
    families,
    mdat_payload_size,
    measure,
    percent,
    pillow,
    zoo_points,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=300, help="test images per set")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(header(f"the codec on differently blended test images ({args.limit} per set)"))
    sets = blends(*study_sources(args.limit, args.mirror))
    avif_setting = AVIF_SWEEP[next(iter(AVIF_SWEEP))]
    baselines = {
        f"blendae-{folder.name}": sorted(str(p) for p in folder.glob("q*.json"))
        for folder in sorted(BASELINE.iterdir())
        if folder.is_dir()
    }
    for name, x in sets.items():
        images = to_uint8(x)
        ours = zoo_points("blendae", families()["blendae-blend"], images)
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
