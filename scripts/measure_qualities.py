"""Measure a variable-rate zoo model at a few qualities and record them in its JSON:
`python scripts/measure_qualities.py` (the general model; rerun it after retraining).

For each quality and each test set it codes the first --limit test images into real `.bae`
files, decodes them, and stores the bpp of the files (header included) and the PSNR of
their decoding over the whole set (10·log10(255²/MSE), the MSE over every pixel) under
"qualities" in the model's JSON: {"66": {"blend:cifar10+mnist": {"bpp": …, "psnr": …}}}.
`blendae compress --help` prints that table without importing torch. The images are the
unit preset's pixels (a blend is the pixel mean of its two images), gray copied to RGB.

`--default-as-good-as q3` first sets the model's default quality: the lowest at which its
files of 2,000 validation blends decode as well (PSNR) as the blend zoo's q3 files do.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from export_zoo import coded_test_metrics

from blendae import codec
from blendae.codec import loader
from blendae.data import load_blended, load_data, to_pixels
from blendae.files import write_json

QUALITIES = (0, 25, 50, 85, 100)  # and the default quality
SETS = ("blend:cifar10+mnist", "cifar10")
DEFAULT_SET = "blend:cifar10+mnist"
VALIDATION = 45_000  # the study's blends from here on: the zoo's validation split


def test_images(spec: str, limit: int, mirror: str | None) -> list[np.ndarray]:
    """The first `limit` test images of `spec` as uint8 32×32×3 pixels."""
    data = load_data(spec, preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("test", limit, torch.device("cpu"))["x"]
    pixels = to_pixels(x, data.space).round().clamp(0, 255).to(torch.uint8)
    return list(np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy()))


def validation_blends(count: int, mirror: str | None) -> list[np.ndarray]:
    """The first `count` of the study's last 5,000 training blends (training images 45,000
    on, the validation split the zoo held out): where the default quality is chosen."""
    data = load_data(DEFAULT_SET, preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("train", VALIDATION + count, torch.device("cpu"))["x"][VALIDATION:]
    pixels = to_pixels(x, data.space).round().clamp(0, 255).to(torch.uint8)
    return list(np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy()))


def lowest_as_good(images: list[np.ndarray], model: str, reference: str) -> tuple[int, dict]:
    """The lowest quality at which `model` decodes `images` at least as well (PSNR) as the
    fixed-rate `reference` does (PSNR rises with quality: a bisection), and the scores."""
    target = score(images, reference, None)
    scores = {reference: target}
    lo, hi = 0, 100
    while lo < hi:
        mid = (lo + hi) // 2
        scores[mid] = score(images, model, mid)
        print(f"  q{mid}: {scores[mid]} against {reference} {target}", flush=True)
        lo, hi = (lo, mid) if scores[mid]["psnr"] >= target["psnr"] else (mid + 1, hi)
    if lo not in scores:
        scores[lo] = score(images, model, lo)
    return lo, scores


def score(images: list[np.ndarray], model: str, quality: int | None) -> dict[str, float]:
    """bpp of the coded files and PSNR of their decoding, over the whole set."""
    files = codec.compress_batch(images, model, quality)
    decoded = np.stack(codec.decompress_batch(files, model)).astype(np.float64)
    mse = float(np.mean((decoded - np.stack(images)) ** 2))
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    return {
        "bpp": round(8 * sum(map(len, files)) / pixels, 4),
        "psnr": round(10 * math.log10(255**2 / mse), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="general", help="a variable-rate zoo model")
    parser.add_argument("--limit", type=int, default=2000, help="test images per set")
    parser.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    parser.add_argument("--sets", nargs="+", default=list(SETS), help="--data specs")
    parser.add_argument("--mirror", help="data mirror (default: $BLENDAE_MIRROR)")
    parser.add_argument(
        "--default-as-good-as",
        metavar="REF",
        help="also set the model's default quality: the lowest as good as zoo model REF "
        "(e.g. q3) on 2,000 validation blends",
    )
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    args = parser.parse_args()
    meta_path = loader.zoo_folder() / f"{args.model}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if args.default_as_good_as:
        images = validation_blends(2000, args.mirror)
        meta["quality"], scores = lowest_as_good(images, args.model, args.default_as_good_as)
        meta["default_quality"] = {
            "rule": f"the lowest quality as good as {args.default_as_good_as} (PSNR) on "
            f"{len(images):,} validation blends (training images {VALIDATION:,} on)",
            "scores": {str(k): v for k, v in scores.items()},
        }
        print(f"default quality: {meta['quality']}")
        # the metrics compress --help and the compare page show are the default's
        splits = load_blended(meta["preset"], mirror=args.mirror, progress=False)
        meta["final_metrics"] = coded_test_metrics(meta_path, splits, meta["quality"])
    qualities = sorted({*args.qualities, meta["quality"]})  # the default's row too
    table: dict[str, dict[str, dict[str, float]]] = {str(q): {} for q in qualities}
    counts = {}
    for spec in args.sets:
        images = test_images(spec, args.limit, args.mirror)
        counts[spec] = len(images)
        for q in qualities:
            t0 = time.perf_counter()
            table[str(q)][spec] = scores = score(images, args.model, q)
            print(
                f"{spec} ({len(images)}) q{q}: {scores['bpp']:.3f} bpp, "
                f"{scores['psnr']:.2f} dB ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    meta["qualities"] = table
    meta["qualities_images"] = counts  # each set's first N test images
    if not args.dry_run:
        write_json(meta_path, meta)
        print(f"wrote {meta_path}")


if __name__ == "__main__":
    main()
