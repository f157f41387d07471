"""Larger images in 32×32 patches or whole: which costs fewer bits, at which size, how fast.

The shipped models were trained on 32×32 images and code an image with a side over 48 as
32×32 patches in one stream (`codec.images.in_patches`). This measures that choice against
the same model coding images whole (its zoo record without `"patch"`, as 0.8 coded them;
below the threshold, patches are emulated by padding to 64×64 as patch coding pads),
on validation images only: crops of matplotlib's Grace Hopper photo and the last CIFAR-10
training images upsampled (bicubic). Per size: the BD-rate of patches against whole over
qualities 10, 40, 70 and 95 (bits of whole files, PSNR over the set); then the encode and
decode speed of many 64×64 images both ways, interleaved rounds, medians.

    python -m benchmarks.patches [--threads 2] [--images 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from benchmarks.common import header
from benchmarks.rd import Point, bd_rate, measure
from blendae import codec as api
from blendae.codec.zoo import zoo_folder
from blendae.data import load_data, to_pixels

MODEL = "general"
PATCH = 32  # its training images' side (its zoo record's "patch")
QUALITIES = (10, 40, 70, 95)
SIZES = ((40, 40), (48, 48), (56, 56), (64, 64), (96, 96), (160, 160), (24, 200), (48, 256))
SPEED_IMAGES, SPEED_ROUNDS = 256, 3


def whole_model(folder: Path) -> str:
    """The shipped model's files under a record without "patch": it codes images whole."""
    meta = json.loads((zoo_folder() / f"{MODEL}.json").read_text(encoding="utf-8"))
    del meta["patch"]
    path = folder / f"{MODEL}.json"
    path.write_text(json.dumps(meta), encoding="utf-8")
    path.with_suffix(".safetensors").write_bytes(
        (zoo_folder() / f"{MODEL}.safetensors").read_bytes()
    )
    return str(path)


def sources(mirror: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Grace Hopper's photo (uint8 H×W×3) and the last 200 CIFAR-10 training images."""
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    hopper = np.asarray(Image.open(photo).convert("RGB"))
    data = load_data("cifar10", preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("train", 50_000, torch.device("cpu"))["x"][-200:]
    cifar = to_pixels(x, data.space).round().clamp(0, 255).to(torch.uint8)
    return hopper, cifar.permute(0, 2, 3, 1).numpy()


def crops(hopper: np.ndarray, cifar: np.ndarray, h: int, w: int, n: int) -> list[np.ndarray]:
    """n images of h×w: photo crops and upsampled CIFAR-10 images, alternately."""
    rng = np.random.default_rng(h * 1000 + w)
    out = []
    for k in range(n):
        if k % 2:
            i = int(rng.integers(hopper.shape[0] - h))
            j = int(rng.integers(hopper.shape[1] - w))
            out.append(np.ascontiguousarray(hopper[i : i + h, j : j + w]))
        else:
            small = Image.fromarray(cifar[(k // 2) % len(cifar)])
            out.append(np.asarray(small.resize((w, h), Image.BICUBIC)))
    return out


def point(images: np.ndarray, model: str, quality: int | None, pad: int = 0) -> Point:
    """`model` at `quality` on `images` (N, h, w, 3), scored and timed by `rd.measure`;
    `pad` > 0: each image edge-padded to multiples of `pad` first, then the decoding cropped
    back: what coding it in patches of that side gives, for sizes where the model codes
    whole (its padding repeats the edges too)."""
    h, w = images.shape[1:3]

    def encode(ims: np.ndarray) -> list[bytes]:
        if pad:
            ims = np.pad(ims, ((0, 0), (0, -h % pad), (0, -w % pad), (0, 0)), "edge")
        return api.compress_batch(list(ims), model, quality)

    def decode(files: list[bytes]) -> list[np.ndarray]:
        return [im[:h, :w] for im in api.decompress_batch(files, model)]

    return measure(model, f"q{quality}", images, encode, decode)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--images", type=int, default=60, help="images per size (default 60)")
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(header("larger images: 32x32 patches against coding whole"), file=sys.stderr)
    hopper, cifar = sources(args.mirror)
    with tempfile.TemporaryDirectory() as tmp:
        whole = whole_model(Path(tmp))
        for h, w in SIZES:
            images = np.stack(crops(hopper, cifar, h, w, args.images))
            # below 1.5 patch sides the shipped model codes whole: pad as patches would
            pad = 0 if 2 * max(h, w) > 3 * PATCH else 2 * PATCH
            ours = [point(images, MODEL, q, pad) for q in QUALITIES]
            theirs = [point(images, whole, q) for q in QUALITIES]
            cells = "  ".join(
                f"q{q} {a.bpp:.3f}/{a.psnr:.2f} vs {b.bpp:.3f}/{b.psnr:.2f}"
                for q, a, b in zip(QUALITIES, ours, theirs, strict=True)
            )
            print(f"{h}x{w}: {cells}")
            how = " (padded to 64x64, as patches would be)" if pad else ""
            print(f"{h}x{w}: BD-rate patches vs whole {bd_rate(theirs, ours):+.1f}%{how}")
            sys.stdout.flush()
        images = np.stack(crops(hopper, cifar, 64, 64, SPEED_IMAGES))
        runs: dict[str, list[Point]] = {MODEL: [], whole: []}
        for _ in range(SPEED_ROUNDS):
            for name, points in runs.items():
                points.append(point(images, name, None))
    (enc, dec), (enc0, dec0) = (
        (
            statistics.median(p.encode_per_s for p in points),
            statistics.median(p.decode_per_s for p in points),
        )
        for points in runs.values()
    )
    print(
        f"{SPEED_IMAGES} images 64x64, {args.threads} threads, medians of {SPEED_ROUNDS}: "
        f"patches encode {enc:.0f} and decode {dec:.0f} images/s, whole {enc0:.0f} and "
        f"{dec0:.0f}: ratios {enc / enc0:.2f} and {dec / dec0:.2f}"
    )


if __name__ == "__main__":
    main()
