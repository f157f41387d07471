"""A mean–scale hyperprior codec (Minnen, Ballé & Toderici, NeurIPS 2018) that decodes exactly.

x → g_a → y → h_a → z. z is coded with a factorized prior (the side information); from it
the decoder predicts a mean and a scale for every element of y (h_s), and y is coded with
the Gaussian conditional. At 32×32 the side information is a large share of the rate, so z
is tiny: `Z` channels at 1/16 of the image side (2×2 for a 32×32 image); a 2×2 z says little
about where in the 8×8 latent things are, so an optional checkerboard context (He et al.,
CVPR 2021) codes y in two halves: the anchors (y[i, j] with i + j even) from z alone, then
the other half from z and the decoded anchors around it.

z and y share one ANS string, z on top. All decoder networks, h_s and the context (they
decide how the y stream is parsed) and g_s (it makes the pixels), run as integer-exact
networks derived from the float ones (`exact.py`), so a file decodes to the same pixels on
every CPU, at any thread count. Training uses the float networks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


CHUNK = 64  # images per network call of a large batch (a large image's patches)


def _chunked(net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """net over x, CHUNK images at a time: an exact net gives the same bits for any split."""
    if len(x) <= CHUNK:
        return net(x)
    return torch.cat([net(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])


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
    context > 0 adds the checkerboard context for the non-anchors: a 3×3 convolution over
    the decoded anchors (M → 2M) and a parameter net of 1×1 convolutions (4M → context →
    context → 2M, ReLU) that corrects h_s's mean and scale from both; the anchors keep h_s's.
    Its last layer starts at zero, so a context model fine-tuned from a trained one
    (`--init-from`) starts as that model.
    """

    stride = 16
    patches = True
    tile = 256  # pixels: the exact decoder's intermediates of a 512-pixel tile took 0.3 GB
    tile_above = 1 << 20
    halo = 4

    def __init__(
        self,
        N: int = 64,
        M: int = 32,
        Nh: int = 32,
        Z: int = 16,
        ste: bool = True,
        context: int = 0,
    ) -> None:
        super().__init__()
        if min(N, M, Nh, Z) < 1 or 9 * max(N, M, Nh, Z) > MAX_FAN_IN:
            raise BlendaeError(
                f"bad hyperprior shape N={N} M={M} Nh={Nh} Z={Z}: each must be 1..130 "
                "(exact decoding bounds a 3×3 layer's fan-in)"
            )
        if not 0 <= context <= MAX_FAN_IN:
            raise BlendaeError(
                f"bad context width {context}: 0 (none) or 1..{MAX_FAN_IN} (exact decoding "
                "bounds a layer's fan-in)"
            )
        self.ste = ste
        self.M = M
        self.context = context
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
        if context:
            self.ctx = nn.Sequential(RangeTracker(), nn.Conv2d(M, 2 * M, 3, padding=1))
            self.ep = nn.Sequential(
                RangeTracker(),
                nn.Conv2d(4 * M, context, 1),
                nn.ReLU(),
                RangeTracker(),
                nn.Conv2d(context, context, 1),
                nn.ReLU(),
                RangeTracker(),
                nn.Conv2d(context, 2 * M, 1),
            )
            nn.init.zeros_(self.ep[-1].weight)
            nn.init.zeros_(self.ep[-1].bias)
        self.entropy_bottleneck = EntropyBottleneck(Z)
        self.gaussian = GaussianConditional()
        self._build_exact()
        # Loading weights (a checkpoint, a shipped model) derives the exact decoders anew.
        self.register_load_state_dict_post_hook(lambda module, _: module._build_exact())

    def _build_exact(self) -> None:
        """Derive the exact decoders from the float ones (identical on every machine)."""
        self.h_s_exact = ExactSequential.from_float(self.h_s)
        self.g_s_exact = ExactSequential.from_float(self.g_s)
        if self.context:
            self.ctx_exact = ExactSequential.from_float(self.ctx)
            self.ep_exact = ExactSequential.from_float(self.ep)
        self._exact_current = True  # until the next training step changes the float ones

    def forward(self, x: Tensor) -> dict[str, Any]:
        """x (B, 3, H, W), H and W multiples of 16 → {"x_hat", "likelihoods": {"y", "z"}}.

        In evaluation after `update()` this is decoding, bit for bit: the exact networks and
        the coded symbols, so metrics measure the real codec."""
        y = self._into(self.g_a(x))
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        if self.training:
            self._exact_current = False
            if self.ste:
                z_hat = _ste_round(z)
            rounded = _ste_round if self.ste else lambda v, _: quantize(v, "noise")
            y_hat, mean, scale = self._mean_scale(y, self.h_s(z_hat), rounded, exact=False)
            y_likelihoods = self.gaussian.likelihood(quantize(y, "noise"), mean, scale)
            x_hat = self.g_s(self._out(y_hat))
        elif self.is_updated and self._exact_current:
            hs = self.h_s_exact(z_hat)
            y_hat, mean, scale = self._mean_scale(y, hs, self._coded, exact=True)
            y_likelihoods = self.gaussian.likelihood(y_hat, mean, scale)
            x_hat = self.g_s_exact(self._out(y_hat))
        else:
            y_hat, mean, scale = self._mean_scale(
                y, self.h_s(z_hat), lambda v, m: torch.round(v - m) + m, exact=False
            )
            y_likelihoods = self.gaussian.likelihood(y_hat, mean, scale)
            x_hat = self.g_s(self._out(y_hat))
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def _into(self, y: Tensor) -> Tensor:
        """The latent the entropy model codes, from g_a's output (a rate control's hook)."""
        return y

    def _out(self, y_hat: Tensor) -> Tensor:
        """g_s's input, from the decoded latent (the inverse hook of `_into`)."""
        return y_hat

    def _coded(self, y: Tensor, mean: Tensor) -> Tensor:
        """What the decoder reconstructs of y: its coded symbols plus the mean."""
        return self.gaussian.symbols(y, mean) + mean

    def _mean_scale(
        self,
        y: Tensor,
        hs: Tensor,
        rounded: Callable[[Tensor, Tensor], Tensor],
        exact: bool,
        tiled: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(ŷ = rounded(y, mean), mean, scale) of y given h_s's output; with the context the
        anchors' parameters come first and the others' from the anchors' ŷ."""
        if not self.context:
            mean, scale = hs.chunk(2, dim=1)
            return rounded(y, mean), mean, scale
        anchors = self._anchors(hs)
        y_anchors = torch.where(anchors, rounded(y, hs.chunk(2, dim=1)[0]), 0.0)
        params = torch.where(anchors, hs, self._rest_params(hs, y_anchors, exact, tiled))
        mean, scale = params.chunk(2, dim=1)
        return rounded(y, mean), mean, scale

    def _rest_params(self, hs: Tensor, y_anchors: Tensor, exact: bool, tiled: bool) -> Tensor:
        """Mean and scale (2M channels) of the non-anchors: h_s's, corrected from the decoded
        anchors around them (y_anchors: zero elsewhere)."""
        ctx_net, ep_net = (self.ctx_exact, self.ep_exact) if exact else (self.ctx, self.ep)

        def correct(both: Tensor) -> Tensor:  # one function of one tensor, for the tiles
            h, anchors = both[:, : 2 * self.M], both[:, 2 * self.M :]
            return h + ep_net(torch.cat([h, ctx_net(anchors)], dim=1))

        return self._map(correct, torch.cat([hs, y_anchors], dim=1), 1, tiled)

    @staticmethod
    def _anchors(latent: Tensor) -> Tensor:
        """(1, 1, h, w) bool: the checkerboard's first half, i + j even."""
        h, w = latent.shape[-2:]
        i = torch.arange(h).view(-1, 1)
        j = torch.arange(w).view(1, -1)
        return ((i + j) % 2 == 0).view(1, 1, h, w).to(latent.device)

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

    def _map(self, net: Callable[[Tensor], Tensor], x: Tensor, factor: int, tiled: bool) -> Tensor:
        """An exact net (upsampling by `factor`) over x, in tiles when the image is large,
        else `CHUNK` images at a time (a large image's patches: memory stays bounded)."""
        if tiled:
            return tiling.synthesis(net, x, factor, self.tile // 4, self.halo)
        return _chunked(net, x)

    def _parts(self, latent: Tensor) -> list[Tensor]:
        """(M, h, w) masks of the y elements in coding order: all at once, or the anchors
        and then the rest with the context."""
        if not self.context:
            return [torch.ones(self.M, *latent.shape[-2:], dtype=torch.bool)]
        anchors = self._anchors(latent)[0].expand(self.M, -1, -1)
        return [anchors, ~anchors]

    def _signs_apart(self, k: int, parts: int) -> bool:
        """Whether part k's signs are coded apart, as raw bits at the bottom of the stream:
        the last part's, for the models with the context (0.4's); 0.3's code none apart."""
        return bool(self.context) and k == parts - 1

    def compress(self, x: Tensor, shared: int = 0) -> list[list[bytes]]:
        """x (B, 3, H, W) → [[one ANS string]] per image: z on top of y (of the anchors on
        top of the rest), so z decodes first. `shared` = k > 0: [[one string]] per k
        consecutive images (the patches of one larger image), each stage of all k before
        the next stage of any, so that the decoder's network calls still see the batch."""
        if shared and len(x) % shared:
            raise BlendaeError(f"{len(x)} images do not split into streams of {shared}")
        tiled = self._tiled(x.shape[2] * x.shape[3])
        if tiled:
            y = self._into(tiling.analysis(self.g_a, x, 4, self.tile, self.halo))
        else:
            y = self._into(_chunked(self.g_a, x))
        z_indices = self.entropy_bottleneck.indices(_chunked(self.h_a, y))
        hs = self._map(self.h_s_exact, self.entropy_bottleneck.dequantize(z_indices), 4, tiled)
        _, mean, scale = self._mean_scale(y, hs, self._coded, exact=True, tiled=tiled)
        symbols = self.gaussian.symbols(y, mean)
        indices = self.gaussian.indices(scale)
        streams = [constriction.stream.stack.AnsCoder() for _ in range(len(x) // (shared or 1))]
        coders = [coder for coder in streams for _ in range(shared or 1)]
        if shared:  # one stack per k images: push them last-first, so they pop first-first
            order = torch.arange(len(x)).view(-1, shared).flip(1).reshape(-1)
            symbols, indices, z_indices = (t[order] for t in (symbols, indices, z_indices))
        parts = self._parts(y)
        for k in reversed(range(len(parts))):
            sym, idx = symbols[:, parts[k]].numpy(), indices[:, parts[k]].numpy()
            apart = self._signs_apart(k, len(parts))
            if apart:  # first onto the empty coders (see `GaussianConditional.encode_signs`)
                self.gaussian.encode_signs(coders, sym)
            self.gaussian.encode_batch(coders, sym, idx, folded=apart)
        for coder, zi in zip(coders, z_indices.numpy(), strict=True):
            self.entropy_bottleneck.encode_into(coder, zi)
        return [[coder_bytes(coder)] for coder in streams]

    def decompress(
        self, strings: Sequence[Sequence[bytes]], size: tuple[int, int], shared: int = 0
    ) -> Tensor:
        """[[one ANS string]] per image → x_hat (B, 3, *size), the same bits everywhere;
        `shared` = k > 0: each string holds k images (`compress(x, shared=k)`)."""
        tiled = self._tiled(size[0] * size[1])
        z_size = (size[0] // self.stride, size[1] // self.stride)
        streams = [open_coder(s[0]) for s in strings]
        coders = [coder for coder in streams for _ in range(shared or 1)]
        z_indices = [
            decoding(lambda c=c: self.entropy_bottleneck.decode_from(c, z_size)) for c in coders
        ]
        z_hat = self.entropy_bottleneck.dequantize(torch.from_numpy(np.stack(z_indices)))
        hs = self._map(self.h_s_exact, z_hat, 4, tiled)
        symbols = torch.zeros((len(coders), self.M, *hs.shape[-2:]), dtype=torch.int32)
        parts = self._parts(hs)
        params = hs  # the anchors' (or all) parameters
        for k, part in enumerate(parts):
            if k:  # the rest, given the decoded anchors
                anchors = self._anchors(hs)
                y_anchors = torch.where(anchors, symbols + hs.chunk(2, dim=1)[0], 0.0)
                rest = self._rest_params(hs, y_anchors, exact=True, tiled=tiled)
                params = torch.where(anchors, hs, rest)
            indices = self.gaussian.indices(params.chunk(2, dim=1)[1][:, part]).numpy()
            apart = self._signs_apart(k, len(parts))
            decoded = decoding(lambda i=indices, a=apart: self.gaussian.decode_batch(coders, i, a))
            if apart:
                decoded = decoding(lambda d=decoded: self.gaussian.decode_signs(coders, d))
            symbols[:, part] = torch.from_numpy(decoded)
        for coder in streams:
            check_empty(coder)
        y_hat = self._out(symbols + params.chunk(2, dim=1)[0])
        if tiled:
            return tiling.synthesis(self.g_s_exact, y_hat, 4, self.tile, self.halo)
        return _chunked(self.g_s_exact, y_hat)
