"""Convolutional transforms over large inputs in overlapping tiles, so memory is bounded.

A tile carries a halo of context on each side, wide enough to cover the transform's
receptive field, and only its centre is kept: the result equals the untiled transform up to
float summation order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Transform = Callable[[Tensor], Tensor]


def tiles(size: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Cover range(size) by tiles: (start, stop) with the halo, (start, stop) of the part
    kept. All four in the same unit (pixels or latents)."""
    out = []
    for start in range(0, size, tile):
        stop = min(start + tile, size)
        out.append((max(start - halo, 0), min(stop + halo, size), start, stop))
    return out


def _in_tiles(
    fn: Transform, x: Tensor, unit_in: int, unit_out: int, tile: int, halo: int
) -> Tensor:
    """fn over x (B, C, H, W) tile by tile; one unit (a latent) is `unit_in` input and
    `unit_out` output pixels per side; `tile` and `halo` count units."""
    h, w = x.shape[2] // unit_in, x.shape[3] // unit_in
    out: Tensor | None = None
    for r0, r1, k0, k1 in tiles(h, tile, halo):
        for c0, c1, j0, j1 in tiles(w, tile, halo):
            part = x[:, :, r0 * unit_in : r1 * unit_in, c0 * unit_in : c1 * unit_in]
            y = fn(part.contiguous(memory_format=torch.channels_last))
            if out is None:
                out = y.new_empty((x.shape[0], y.shape[1], h * unit_out, w * unit_out))
            keep = (slice(None), slice(None))
            src = (slice((k0 - r0) * unit_out, (k1 - r0) * unit_out),)
            src += (slice((j0 - c0) * unit_out, (j1 - c0) * unit_out),)
            dst = (slice(k0 * unit_out, k1 * unit_out), slice(j0 * unit_out, j1 * unit_out))
            out[keep + dst] = y[keep + src]
    assert out is not None
    return out


def analysis(g_a: Transform, x: Tensor, stride: int, tile: int, halo: int) -> Tensor:
    """g_a (stride `stride`) over image x in tiles of `tile` pixels, halo `halo` latents."""
    return _in_tiles(g_a, x, stride, 1, tile // stride, halo)


def synthesis(g_s: Transform, y: Tensor, stride: int, tile: int, halo: int) -> Tensor:
    """g_s (upsampling by `stride`) over latent y in tiles of `tile` output pixels."""
    return _in_tiles(g_s, y, 1, stride, tile // stride, halo)
