"""The codec model: Ballé et al., "End-to-end optimized image compression" (ICLR 2017).

Analysis transform g_a (strided convolutions with GDN) → latent y → quantized y_hat with a
learned factorized prior (`EntropyBottleneck`) → synthesis g_s (sub-pixel convolutions with
inverse GDN) → x_hat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from blendae.errors import BlendaeError
from blendae.models import tiling
from blendae.models.base import CompressionModel
from blendae.models.entropy import EntropyBottleneck, quantize
from blendae.models.layers import GDN, make_activation


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.Sequential:
    # Sub-pixel convolution: the 4 output phases of a 2× upsampling computed by one 3×3
    # convolution; the receptive field of a 5×5 transposed convolution at a fraction of
    # its CPU cost.
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2))


def _act(name: str, channels: int, inverse: bool) -> nn.Module:
    """GDN (IGDN on the synthesis side), or a pointwise activation by name."""
    return GDN(channels, inverse=inverse) if name == "gdn" else make_activation(name)


class FactorizedPrior(CompressionModel):
    """Ballé 2017 codec with `depth` stride-2 stages: a (M, H/2^depth, W/2^depth) latent.

    N: channels of the hidden layers; M: latent channels; act: "gdn" (GDN/IGDN, the paper's)
    or a pointwise activation name. On 32×32 images depth 2 gives an 8×8 latent, enough for
    the 1–2.5 bpp range. ste=True decodes the rounded latent with a straight-through
    gradient while the rate still sees the noisy one (as in Minnen & Singh 2020): the
    synthesis then trains on what it will decode, worth ~0.5 dB after one CPU epoch here.
    The defaults are the shipped models' architecture. Coding runs the transforms in
    overlapping tiles of `tile` pixels above `tile_above` pixels per image, so memory stays
    bounded at any size; the bitstream does not depend on the tiling (tested).
    """

    tile = 512  # tile side in pixels (a multiple of the stride)
    tile_above = 1 << 20  # pixels per image above which the transforms run in tiles
    halo = 4  # latents of context around a tile: covers the receptive field of g_a and g_s

    def __init__(
        self, N: int = 64, M: int = 32, depth: int = 2, act: str = "gdn", ste: bool = True
    ) -> None:
        super().__init__()
        if N < 1 or M < 1 or depth < 1:
            raise BlendaeError(
                f"bad factorized codec shape N={N} M={M} depth={depth}; all must be >= 1"
            )
        self.stride = 2**depth
        self.ste = ste
        g_a: list[nn.Module] = []
        for i in range(depth):
            g_a += [_down(3 if i == 0 else N, N), _act(act, N, inverse=False)]
        g_a.append(nn.Conv2d(N, M, 3, padding=1))
        g_s: list[nn.Module] = [nn.Conv2d(M, N, 3, padding=1)]
        for i in reversed(range(depth)):
            g_s += [_act(act, N, inverse=True), _up(N, 3 if i == 0 else N)]
        self.g_a = nn.Sequential(*g_a)
        self.g_s = nn.Sequential(*g_s)
        self.entropy_bottleneck = EntropyBottleneck(M)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """x (B, 3, H, W), H and W multiples of `stride` → {"x_hat", "likelihoods": {"y"}}."""
        y = self.g_a(x)  # (B, M, H/stride, W/stride)
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        if self.training and self.ste:
            # Rate from the noisy latent, synthesis from the rounded one (straight-through):
            # training then sees the decoder's true input.
            y_hat = y + (quantize(y, "dequantize") - y).detach()
        x_hat = self.g_s(y_hat)  # (B, 3, H, W)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods}}

    @property
    def is_updated(self) -> bool:
        return self.entropy_bottleneck.is_updated

    def update(self) -> None:
        self.entropy_bottleneck.update()

    def _tiled(self, pixels: int) -> bool:
        return pixels > self.tile_above

    def compress(self, x: Tensor) -> list[list[bytes]]:
        """x (B, 3, H, W) → [[y string]] per image."""
        if self._tiled(x.shape[2] * x.shape[3]):
            y = tiling.analysis(self.g_a, x, self.stride, self.tile, self.halo)
        else:
            y = self.g_a(x)
        return [[s] for s in self.entropy_bottleneck.compress(y)]

    def decompress(self, strings: Sequence[Sequence[bytes]], size: tuple[int, int]) -> Tensor:
        """[[y string]] per image → x_hat (B, 3, *size)."""
        latent = (size[0] // self.stride, size[1] // self.stride)
        y_hat = self.entropy_bottleneck.decompress([s[0] for s in strings], latent)
        if self._tiled(size[0] * size[1]):
            return tiling.synthesis(self.g_s, y_hat, self.stride, self.tile, self.halo)
        # Channels-last, as the encoder's latent is when the codec feeds channels-last images:
        # the same layout gives the same float arithmetic as the evaluation forward pass.
        return self.g_s(y_hat.contiguous(memory_format=torch.channels_last))  # (B, 3, H, W)
