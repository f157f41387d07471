"""A mean–scale hyperprior codec (Minnen, Ballé & Toderici, NeurIPS 2018) that decodes exactly.

x → g_a → y → h_a → z. z is coded with a factorized prior (the side information); from it
the decoder predicts a mean and a scale for every element of y (h_s), and y is coded with
the Gaussian conditional. At 32×32 the side information is a large share of the rate, so z
is tiny: `Z` channels at 1/16 of the image side (2×2 for a 32×32 image).

z and y share one ANS string, z on top. Both decoder networks, h_s (it decides how the y
stream is parsed) and g_s (it makes the pixels), run as integer-exact networks derived
from the float ones (`exact.py`), so a file decodes to the same pixels on every CPU, at any
thread count. Training uses the float networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import constriction
import numpy as np
import torch
from torch import Tensor, nn

from blendae.errors import BlendaeError
from blendae.models import tiling
from blendae.models.base import CompressionModel
from blendae.models.entropy import (
    EntropyBottleneck,
    check_empty,
    coder_bytes,
    decoding,
    open_coder,
    quantize,
)
from blendae.models.exact import MAX_FAN_IN, ExactSequential, RangeTracker
from blendae.models.gaussian import GaussianConditional
from blendae.models.layers import GDN


def _ste_round(x: Tensor, mean: Tensor | float = 0.0) -> Tensor:
    """round(x − mean) + mean with a straight-through gradient."""
    return x + (torch.round(x - mean) + mean - x).detach()


def _tracked_conv(cin: int, cout: int, up: bool = False) -> list[nn.Module]:
    """RangeTracker + 3×3 conv (a sub-pixel 2× upsampling if `up`): an exact-able layer."""
    if up:
        return [RangeTracker(), nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2)]
    return [RangeTracker(), nn.Conv2d(cin, cout, 3, padding=1)]


class MeanScaleHyperprior(CompressionModel):
    """g_a: two stride-2 5×5 convolutions with GDN, then 3×3 to M channels (y at 1/4 side).

    h_a: 3×3, then two stride-2 5×5 convolutions with ReLU down to Z channels (z at 1/16).
    h_s: two sub-pixel 2× upsamplings with ReLU, then 3×3 to 2M channels (mean, scale).
    g_s: 3×3, IGDN, sub-pixel up, IGDN, sub-pixel up to 3 channels. ste=True decodes rounded
    latents (straight-through) while the rate sees noisy ones, as `FactorizedPrior` does.
    """

    stride = 16
    tile = 256  # pixels: the exact decoder's intermediates of a 512-pixel tile took 0.3 GB
    tile_above = 1 << 20
    halo = 4

    def __init__(
        self, N: int = 64, M: int = 32, Nh: int = 32, Z: int = 16, ste: bool = True
    ) -> None:
        super().__init__()
        if min(N, M, Nh, Z) < 1 or 9 * max(N, M, Nh, Z) > MAX_FAN_IN:
            raise BlendaeError(
                f"bad hyperprior shape N={N} M={M} Nh={Nh} Z={Z}: each must be 1..130 "
                "(exact decoding bounds a 3×3 layer's fan-in)"
            )
        self.ste = ste
        self.M = M
        self.g_a = nn.Sequential(
            nn.Conv2d(3, N, 5, stride=2, padding=2),
            GDN(N),
            nn.Conv2d(N, N, 5, stride=2, padding=2),
            GDN(N),
            nn.Conv2d(N, M, 3, padding=1),
        )
        self.h_a = nn.Sequential(
            nn.Conv2d(M, Nh, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(Nh, Nh, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(Nh, Z, 5, stride=2, padding=2),
        )
        self.h_s = nn.Sequential(
            *_tracked_conv(Z, Nh, up=True),
            nn.ReLU(),
            *_tracked_conv(Nh, Nh, up=True),
            nn.ReLU(),
            *_tracked_conv(Nh, 2 * M),
        )
        self.g_s = nn.Sequential(
            *_tracked_conv(M, N),
            RangeTracker(),
            GDN(N, inverse=True),
            *_tracked_conv(N, N, up=True),
            RangeTracker(),
            GDN(N, inverse=True),
            *_tracked_conv(N, 3, up=True),
        )
        self.entropy_bottleneck = EntropyBottleneck(Z)
        self.gaussian = GaussianConditional()
        self._build_exact()
        # Loading weights (a checkpoint, a shipped model) derives the exact decoders anew.
        self.register_load_state_dict_post_hook(lambda module, _: module._build_exact())

    def _build_exact(self) -> None:
        """Derive the exact decoders from the float ones (identical on every machine)."""
        self.h_s_exact = ExactSequential.from_float(self.h_s)
        self.g_s_exact = ExactSequential.from_float(self.g_s)
        self._exact_current = True  # until the next training step changes the float ones

    def forward(self, x: Tensor) -> dict[str, Any]:
        """x (B, 3, H, W), H and W multiples of 16 → {"x_hat", "likelihoods": {"y", "z"}}.

        In evaluation after `update()` this is decoding, bit for bit: the exact networks and
        the coded symbols (clamped to their tables), so metrics measure the real codec."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        if self.training:
            self._exact_current = False
            if self.ste:
                z_hat = _ste_round(z)
            mean, scale = self.h_s(z_hat).chunk(2, dim=1)
            y_likelihoods = self.gaussian.likelihood(quantize(y, "noise"), mean, scale)
            x_hat = self.g_s(_ste_round(y, mean) if self.ste else quantize(y, "noise"))
        elif self.is_updated and self._exact_current:
            mean, scale, _ = self._params(z_hat, tiled=False)
            y_hat = self.gaussian.symbols(y, mean) + mean
            y_likelihoods = self.gaussian.likelihood(y_hat, mean, scale)
            x_hat = self.g_s_exact(y_hat)
        else:
            mean, scale = self.h_s(z_hat).chunk(2, dim=1)
            y_hat = torch.round(y - mean) + mean
            y_likelihoods = self.gaussian.likelihood(y_hat, mean, scale)
            x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    @property
    def is_updated(self) -> bool:
        return self.entropy_bottleneck.is_updated and self.gaussian.is_updated

    def update(self) -> None:
        self.entropy_bottleneck.update()
        self.gaussian.update()
        self._build_exact()

    # ---- coding -------------------------------------------------------------------------
    def _tiled(self, pixels: int) -> bool:
        return pixels > self.tile_above

    def _params(self, z_hat: Tensor, tiled: bool) -> tuple[Tensor, Tensor, Tensor]:
        """z_hat → (mean, scale, table index) of every y element, exactly (float64)."""
        if tiled:
            out = tiling.synthesis(self.h_s_exact, z_hat, 4, self.tile // 4, self.halo)
        else:
            out = self.h_s_exact(z_hat)
        mean, scale = out.chunk(2, dim=1)
        return mean, scale, self.gaussian.indices(scale)

    def compress(self, x: Tensor) -> list[list[bytes]]:
        """x (B, 3, H, W) → [[one ANS string]] per image: z on top of y, so z decodes first."""
        tiled = self._tiled(x.shape[2] * x.shape[3])
        y = tiling.analysis(self.g_a, x, 4, self.tile, self.halo) if tiled else self.g_a(x)
        z_indices = self.entropy_bottleneck.indices(self.h_a(y))
        mean, _, indices = self._params(self.entropy_bottleneck.dequantize(z_indices), tiled)
        symbols = self.gaussian.symbols(y, mean).flatten(1).numpy()
        strings = []
        for zi, sym, idx in zip(
            z_indices.numpy(), symbols, indices.flatten(1).numpy(), strict=True
        ):
            coder = constriction.stream.stack.AnsCoder()
            self.gaussian.encode_into(coder, sym, idx)
            self.entropy_bottleneck.encode_into(coder, zi)
            strings.append([coder_bytes(coder)])
        return strings

    def decompress(self, strings: Sequence[Sequence[bytes]], size: tuple[int, int]) -> Tensor:
        """[[one ANS string]] per image → x_hat (B, 3, *size), the same bits everywhere."""
        tiled = self._tiled(size[0] * size[1])
        z_size = (size[0] // self.stride, size[1] // self.stride)
        coders = [open_coder(s[0]) for s in strings]
        z_indices = [
            decoding(lambda c=c: self.entropy_bottleneck.decode_from(c, z_size)) for c in coders
        ]
        z_hat = self.entropy_bottleneck.dequantize(torch.from_numpy(np.stack(z_indices)))
        mean, _, indices = self._params(z_hat, tiled)
        symbols = []
        for coder, idx in zip(coders, indices.flatten(1).numpy(), strict=True):
            symbols.append(decoding(lambda c=coder, i=idx: self.gaussian.decode_from(c, i)))
            check_empty(coder)
        y_hat = torch.from_numpy(np.stack(symbols)).view(indices.shape) + mean
        if tiled:
            return tiling.synthesis(self.g_s_exact, y_hat, 4, self.tile, self.halo)
        return self.g_s_exact(y_hat)
