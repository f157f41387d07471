"""What one variable-rate network costs against separate fixed-rate models trained alike.

Trains, from the same start (the zoo's q3 weights), on the same images, for the same
epochs, batch size, learning rate, schedule and seed: the `gained` model over its whole λ
range (as the shipped general model was), and one fixed-rate hyperprior with the checkerboard
context (the zoo's architecture) at the λ the gained model gives each of a few qualities.
Then it codes images that none of them trained on (training images 48,000 to 49,999 of the
study's blends, beyond --limit-train and inside the held-out --val split) into real `.bae`
files with each model, and prints each model's points and the BD-rate (monotone cubic over
the shared PSNR range, as in `benchmarks.rd`) of the one network against the separate models:
positive means the one network needs that many % more bits.

Three recipes of the one network are trained and scored: the shipped general model's; with
`gain_lr` 100 (the gain vectors learn 100× faster, nothing else changes); and the balanced
one (`balance` 0.5: each image's loss weighed by λ^−0.5, with `gain_lr` 20), which moves
quality from the top of the range to the bottom. Those values were chosen among eight settings
on these held-out images at the default budget (never on a test set), then checked at larger
ones.

This is a small-budget proxy of the comparison issue #20 asks for (the shipped general model
trained 18 epochs on 324,000 images on a GPU); its runs land in runs/variable-rate-cost/ and
are reused when the script runs again with the same budget. Since 0.13 every run calibrates
its exact decoders at its end (`training.loop`); the script refuses runs an earlier release
left there, which did not.

    python -m benchmarks.variable_rate_cost [--limit-train 20000] [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import header
from benchmarks.rd import Point, bd_or_reason, percent, saving_line
from blendae import codec, runs
from blendae.data import load_data, to_pixels

DATA = "blend:cifar10+mnist"
CONTEXT = {"N": 64, "M": 32, "Nh": 32, "Z": 16, "ste": True, "context": 64}
LMBDA = (0.002, 0.3)  # the general model's range
RECIPES = {  # the one network's training options (the shipped general model: none)
    "gained": {},
    "gained-gain-lr": {"gain_lr": 100.0},
    "gained-balanced": {"balance": 0.5, "gain_lr": 20.0},
}
QUALITIES = (10, 40, 70, 95)  # the separate models' λ: the gained model's at these qualities
HELD_OUT = (48_000, 50_000)  # training images no run here trains on
OUT = Path("runs/variable-rate-cost")


def lmbda_at(quality: float) -> float:
    """`GainedHyperprior.lmbda_at` for the shipped range."""
    lo, hi = LMBDA
    return lo * (hi / lo) ** (quality / 100)


def train(name: str, model: str, args: dict, extra: list[str], opts: argparse.Namespace) -> Path:
    """One `blendae train` run (skipped when this budget's model is there already)."""
    out = OUT / f"{opts.limit_train}x{opts.epochs}" / name
    if (out / "model.safetensors").exists():
        if "calibration" not in runs.load_state(out):
            sys.exit(f"{out} was trained before 0.13 (not calibrated at its end): move {OUT} away")
        return out
    command = [
        sys.executable, "-m", "blendae", "train", "--model", model,
        "--model-args", json.dumps(args), "--init-from", "src/blendae/zoo/q3.json",
        "--data", DATA, "--preset", "unit", "--epochs", str(opts.epochs),
        "--batch-size", "64", "--lr", "2e-4", "--lr-schedule", "cosine", "--clip-grad", "1",
        "--limit-train", str(opts.limit_train), "--val", "2000", "--seed", "0",
        "--out", str(out), "--no-tensorboard", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def held_out_images(mirror: str | None) -> list[np.ndarray]:
    data = load_data(DATA, preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("train", HELD_OUT[1], torch.device("cpu"))["x"][HELD_OUT[0] :]
    pixels = to_pixels(x, data.space).round().clamp(0, 255).to(torch.uint8)
    return list(np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy()))


def point(images: list[np.ndarray], model: str, quality: int | None, label: str) -> Point:
    files = codec.compress_batch(images, model, quality)
    decoded = np.stack(codec.decompress_batch(files, model)).astype(np.float64)
    mse = float(np.mean((decoded - np.stack(images).astype(np.float64)) ** 2))
    bpp = 8 * sum(map(len, files)) / (len(images) * 32 * 32)
    return Point(label.split()[0], label, bpp, 10 * math.log10(255**2 / mse), 0.0, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit-train", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    opts = parser.parse_args()
    if not 0 < opts.limit_train <= HELD_OUT[0]:
        parser.error(f"--limit-train must be 1..{HELD_OUT[0]}: later images are held out")
    torch.set_num_threads(opts.threads)
    print(header("one variable-rate network against separate models trained alike"))
    print(f"data {DATA}, first {opts.limit_train} training images, {opts.epochs} epochs each")
    gained = {
        name: train(
            name,
            "gained",
            {**CONTEXT, "levels": 6, "lmbda": list(LMBDA), "quality": 64, **options},
            [],
            opts,
        )
        for name, options in RECIPES.items()
    }
    separate = {
        q: train(f"fixed-q{q}", "hyperprior", CONTEXT, ["--lambda", f"{lmbda_at(q):.6g}"], opts)
        for q in QUALITIES
    }
    images = held_out_images(opts.mirror)
    theirs = [point(images, str(run), None, f"separate q{q}") for q, run in separate.items()]
    ours = {
        name: [point(images, str(run), q, f"{name} q{q}") for q in range(0, 101, 10)]
        for name, run in gained.items()
    }
    for p in [*theirs, *(p for points in ours.values() for p in points)]:
        print(f"  {p.setting:<22} {p.bpp:.3f} bpp  {p.psnr:.2f} dB")
    for name, points in ours.items():
        cost = percent(bd_or_reason(theirs, points))
        print(f"variable-rate cost of {name} (BD-rate vs separate models): {cost}")
        print(f"  at each separate model's PSNR: {saving_line(theirs, points, len(theirs))}")


if __name__ == "__main__":
    main()
