"""Augmentations of one source's images, applied per image before any blending.

Plain tensor code on float images (N, C, S, S) in [0, 1]: each operation is applied to a
random half of the batch (`rot90`: a random number of quarter turns), drawn from the
generator given, so a resumed epoch sees the same images. Blends augment each source on
its own, so a digit and a photo move independently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_FLIPS: dict[str, Callable[[Tensor], Tensor]] = {
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-1, -2),
    "invert": lambda x: 1 - x,
}


def augment(x: Tensor, ops: Sequence[str], generator: torch.Generator) -> Tensor:
    """`x` (N, C, S, S) with each of `ops` applied to random images; modifies `x` in place."""
    n = len(x)
    for op in ops:
        if op == "rot90":
            turns = torch.randint(0, 4, (n,), generator=generator)
            for k in (1, 2, 3):
                chosen = turns == k
                if chosen.any():
                    x[chosen] = torch.rot90(x[chosen], k, (-2, -1))
        else:  # a name in blendae.data.spec.AUGMENTS
            chosen = torch.rand(n, generator=generator) < 0.5
            if chosen.any():
                x[chosen] = _FLIPS[op](x[chosen])
    return x
