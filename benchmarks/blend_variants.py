"""The study's test sources blended in ways the zoo was not trained for.

Shared by `benchmarks.shifted_blends` (every variant) and `benchmarks.rd --all-sets` (the
transposed, inverted digits), so both code the same pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

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
    """(N, C, H, W) in [0, 1] as uint8 (N, H, W, 3), gray copied to RGB, for the codecs."""
    pixels = (x.expand(-1, 3, -1, -1) * 255).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def study_sources(limit: int, mirror: str | None) -> tuple[Tensor, Tensor]:
    """The first `limit` CIFAR-10 photos and MNIST digits of the study's test split, in [0, 1]."""
    sources = load_blended("unit", mirror=mirror, progress=False, sources=True).sources
    assert sources is not None
    test = sources["test"]
    return test.cifar[:limit], test.mnist[:limit]


def variant_images(name: str, limit: int, mirror: str | None) -> np.ndarray:
    """The first `limit` test images of one variant of `blends` as uint8 RGB."""
    return to_uint8(blends(*study_sources(limit, mirror))[name])
