"""Write the sample images `blendae serve` offers: blended test images, unit preset, as PNG.

Run once from the repository root with the dataset mirror at hand:
    python scripts/make_serve_samples.py ../shared/datasets
Sample i is the pixel mean image (CIFAR-10 test image k + MNIST test digit k) / 2 for 16
indices k spread over the test split, rounded to uint8 RGB 32×32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blendae.data import to_pixels
from blendae.data.blend import blend
from blendae.data.formats import read_cifar, read_mnist

COUNT = 16
STEP = 613  # spreads the indices over the 10,000 test images (613 * 15 < 10,000)
OUT = Path(__file__).resolve().parents[1] / "src/blendae/serve/static/samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirror", type=Path, help="folder holding the official dataset files")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs")
    args = parser.parse_args()
    files = {p.name: p for p in args.mirror.iterdir()}
    mnist, _ = read_mnist(files, "test")
    cifar, _ = read_cifar(files, "test")
    picks = np.arange(COUNT) * STEP
    x = blend(cifar[picks], mnist[picks], "unit")  # (N, 3, 32, 32) in [0, 1]
    u8 = to_pixels(x, "unit").round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    for k, image in zip(picks, u8.numpy(), strict=True):
        Image.fromarray(image).save(args.out / f"test-{k:04d}.png", optimize=True)
    total = sum(p.stat().st_size for p in args.out.glob("*.png"))
    print(f"wrote {COUNT} samples to {args.out} ({total:,} bytes)")


if __name__ == "__main__":
    main()
