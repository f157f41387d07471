"""The blend variants of benchmarks/blend_variants.py: the sources mixed differently."""

from __future__ import annotations

import torch
from benchmarks.blend_variants import blends, to_uint8


def test_the_variants_mix_the_same_sources_in_other_ways() -> None:
    g = torch.Generator().manual_seed(0)
    cifar, digits = torch.rand(6, 3, 32, 32, generator=g), torch.rand(6, 1, 32, 32, generator=g)
    sets = blends(cifar, digits)
    assert torch.equal(sets["test blends"], (cifar + digits) / 2)
    for x in sets.values():
        assert x.shape == (6, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    # Shuffled: every photo keeps its place, the digits are a permutation of the originals.
    shuffled_digits = sets["shuffled pairs"] * 2 - cifar
    matches = [
        [torch.allclose(shuffled_digits[i, :1], digits[j], atol=1e-6) for j in range(6)]
        for i in range(6)
    ]
    assert all(sum(row) == 1 for row in matches) and not all(matches[i][i] for i in range(6))
    inverted = sets["inverted digits"] * 2 - cifar
    assert torch.allclose(inverted[:, :1], 1 - digits.transpose(2, 3), atol=1e-6)
    images = to_uint8(sets["test blends"])
    assert images.shape == (6, 32, 32, 3) and images.dtype.name == "uint8"
