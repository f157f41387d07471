"""Quantization and the learned factorized prior, with its frozen integer probability tables.

The prior is the non-parametric per-channel density of Ballé et al., "Variational image
compression with a scale hyperprior" (ICLR 2018, appendix 6.1), used as the factorized
entropy model of Ballé et al., "End-to-end optimized image compression" (ICLR 2017).
`forward()` gives likelihoods for training; `update()` freezes integer tables that are the
only thing the entropy coder (constriction's ANS) ever sees, so encoder and decoder agree bit
for bit; only `compress`/`decompress` touch the coder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendae.ans import (
    PRECISION,
    categorical,
    check_empty,
    coder_bytes,
    decode_factorized,
    decoding,
    open_coder,
)

TAIL_MASS = 1e-7  # mass per side left outside a channel's table (clamped to its edge symbol)
MAX_SUPPORT = 255  # widest table; wider latents are clamped (a model bug, not an input error)
LIKELIHOOD_BOUND = 1e-9  # keeps -log2(likelihood) finite while training

QUANTIZE_MODES = ("noise", "dequantize", "symbols")


def quantize(x: Tensor, mode: str) -> Tensor:
    """The one quantization entry point (Ballé et al. 2017).

    "noise": x + U(-½, ½), the differentiable training proxy; "dequantize": round(x) as
    floats, the evaluation and decoding path; "symbols": round(x) as int32, for coding.
    """
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    if mode == "dequantize":
        return torch.round(x)
    if mode == "symbols":
        return torch.round(x).to(torch.int32)
    raise ValueError(f"unknown quantize mode {mode!r}; choose one of {QUANTIZE_MODES}")


def bits_per_pixel(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """The rate: −Σ log2 p over every latent, per image pixel (0 when there are no latents)."""
    total = sum((torch.log(lik.float()).sum() for lik in likelihoods.values()), torch.zeros(()))
    return -total / (math.log(2) * num_pixels)


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows when it would raise x (avoids dead tails)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes, None


class EntropyBottleneck(nn.Module):
    """Quantizer plus learned factorized density p(y_hat) = Π_c p_c, one density per channel.

    Each p_c is the difference of a learned monotone CDF at ±½ around the symbol, so the
    likelihood of `y_hat = y + noise` is the density convolved with a unit box, as in
    the paper. After `update()`, `_pmf` holds for every channel `L` integer probabilities
    (each ≥ 1, summing to 2**PRECISION) of the symbols `_offset[c] .. _offset[c] + L - 1`;
    latents outside that range are clamped to it, in evaluation and in coding alike.
    """

    def __init__(
        self, channels: int, filters: Sequence[int] = (3, 3, 3), init_scale: float = 1.0
    ) -> None:
        # init_scale 1, not the paper's 10: the initial latents are small, and a density
        # spread over ±10 costs ~4 bits per latent that short CPU trainings spend epochs undoing.
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            # softplus(init) = 1 / (scale · fan_in): the initial CDF spans about ±init_scale
            init = float(np.log(np.expm1(1 / scale / dims[i])))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        # Frozen coding tables, filled by update(); empty until then.
        self.register_buffer("_pmf", torch.zeros(channels, 0, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(channels, dtype=torch.int32))
        self._coder_models: list[Any] | None = None  # built from the tables on first use

    # ---- the density ----------------------------------------------------------------------
    def _logits_cdf(self, v: Tensor) -> Tensor:
        """Logit of the learned CDF at v: (C, 1, K) → (C, 1, K), in v's dtype."""
        for i, matrix in enumerate(self.matrices):
            v = torch.matmul(F.softplus(matrix.to(v.dtype)), v) + self.biases[i].to(v.dtype)
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i].to(v.dtype)) * torch.tanh(v)
        return v

    def _likelihood_cm(self, v: Tensor) -> Tensor:
        """P(symbol interval [v-½, v+½]) per element of v: (C, 1, K) → (C, 1, K)."""
        lower = self._logits_cdf(v - 0.5)
        upper = self._logits_cdf(v + 0.5)
        # Evaluate on the side of the median where the sigmoids are far from 1 (precision).
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y_hat: Tensor) -> Tensor:
        """Bounded likelihood of each element of y_hat (B, C, H, W) under its channel's density."""
        b, c, h, w = y_hat.shape
        v = y_hat.permute(1, 0, 2, 3).reshape(c, 1, -1)  # (C, 1, B·H·W)
        lik = self._likelihood_cm(v).reshape(c, b, h, w).permute(1, 0, 2, 3)
        return _LowerBound.apply(lik, LIKELIHOOD_BOUND)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y → (y_hat, likelihoods): noisy while training, rounded (and clamped) otherwise."""
        if self.training:
            y_hat = quantize(y, "noise")
        else:
            y_hat = quantize(y, "dequantize")
            if self.is_updated:
                y_hat = self._clamp(y_hat)
        return y_hat, self.likelihood(y_hat)

    # ---- the frozen tables --------------------------------------------------------------
    @property
    def is_updated(self) -> bool:
        return self._pmf.shape[1] > 0

    @torch.no_grad()
    def update(self) -> None:
        """Freeze the integer coding tables from the current density (float64, once).

        Must run after training and before `compress`/`decompress`; the tables are buffers,
        so they are saved and loaded with the weights and never recomputed at decode time.
        """
        grid = torch.arange(-MAX_SUPPORT, MAX_SUPPORT + 1, dtype=torch.float64)
        points = grid.expand(self.channels, 1, -1)
        cdf_hi = torch.sigmoid(self._logits_cdf(points + 0.5)).squeeze(1)  # (C, G): P(y < k + ½)
        cdf_lo = torch.sigmoid(self._logits_cdf(points - 0.5)).squeeze(1)
        # Per channel: the symbols between the TAIL_MASS quantiles.
        lo = (cdf_hi <= TAIL_MASS).sum(dim=1)  # first grid index above the lower tail
        hi = len(grid) - 1 - (cdf_lo >= 1 - TAIL_MASS).sum(dim=1)
        hi = torch.maximum(hi, lo)
        length = max(int((hi - lo).max()) + 1, 2)  # constriction needs ≥ 2 symbols
        start = torch.clamp(lo, max=len(grid) - length)  # (C,) grid index of symbol 0
        idx = start[:, None] + torch.arange(length)  # (C, L)
        mass = cdf_hi.gather(1, idx) - cdf_lo.gather(1, idx)  # (C, L)
        mass[:, 0] = cdf_hi.gather(1, idx[:, :1]).squeeze(1)  # edges take the tails
        mass[:, -1] = 1 - cdf_lo.gather(1, idx[:, -1:]).squeeze(1)
        mass = mass.clamp_min(0) / mass.clamp_min(0).sum(dim=1, keepdim=True)
        total = 1 << PRECISION
        pmf = torch.floor(mass * (total - length)).long() + 1  # every symbol ≥ 1
        deficit = total - pmf.sum(dim=1)  # ≥ 0, at most `length`
        pmf[torch.arange(self.channels), mass.argmax(dim=1)] += deficit
        assert bool((pmf.sum(dim=1) == total).all()) and bool((pmf >= 1).all())
        self._pmf = pmf.to(torch.int32)
        self._offset = (start - MAX_SUPPORT).to(torch.int32)
        self._coder_models = None

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Tables have a learned width L: take the stored shape before copying values in.
        for name in ("_pmf", "_offset"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=self._pmf.device))
        self._coder_models = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _require_tables(self) -> None:
        if not self.is_updated:
            raise RuntimeError("the entropy model has no coding tables: run update() first")

    def _clamp(self, y_hat: Tensor) -> Tensor:
        low = self._offset.view(1, -1, 1, 1).to(y_hat.dtype)
        return torch.minimum(torch.maximum(y_hat, low), low + (self._pmf.shape[1] - 1))

    def coder_probabilities(self) -> np.ndarray:
        """(C, L) float32 weights `pmf - 1` for constriction's `Categorical(perfect=False)`.

        With these weights the coder uses exactly the stored integers (`ans.categorical`).
        """
        self._require_tables()
        return (self._pmf.cpu().numpy().astype(np.int64) - 1).astype(np.float32)

    def _channel_models(self) -> list[Any]:
        """One constriction categorical per channel, built once from the frozen tables."""
        if self._coder_models is None:
            self._require_tables()
            self._coder_models = [categorical(row) for row in self._pmf.cpu().numpy()]
        return self._coder_models

    def indices(self, y: Tensor) -> Tensor:
        """Latent y (B, C, H, W) → int32 table indices (B, C, H, W), each in [0, L)."""
        self._require_tables()
        indices = quantize(y, "symbols") - self._offset.view(1, -1, 1, 1)
        return indices.clamp_(0, self._pmf.shape[1] - 1)

    def dequantize(self, indices: Tensor) -> Tensor:
        """Table indices (B, C, H, W) → y_hat as floats, the exact inverse of `indices`."""
        self._require_tables()
        return (indices.to(torch.int64) + self._offset.view(1, -1, 1, 1)).to(torch.float32)

    def encode_into(self, coder: Any, indices: np.ndarray) -> None:
        """Push one image's table indices (C, H, W) onto an ANS coder, channel 0 on top."""
        models = self._channel_models()
        for channel in reversed(range(len(indices))):
            coder.encode_reverse(indices[channel].reshape(-1), models[channel])

    def decode_from(self, coder: Any, size: tuple[int, int]) -> np.ndarray:
        """Pop one image's table indices (C, H, W) off an ANS coder."""
        return decode_factorized(coder, self._channel_models(), size)

    def compress(self, y: Tensor) -> list[bytes]:
        """Latent y (B, C, H, W) → one ANS byte string per image.

        Channels are pushed last to first so that channel 0 decodes first; the words equal
        one lazy `Categorical(perfect=False)` call over all indices in channel-major order
        (constriction documents the two as binary compatible; a test checks). The words are
        stored little-endian without up to 3 trailing zero bytes (see docs/format.md).
        """
        strings = []
        for indices in self.indices(y).cpu().numpy():  # (C, H, W)
            coder = constriction.stream.stack.AnsCoder()
            self.encode_into(coder, indices)
            strings.append(coder_bytes(coder))
        return strings

    def decompress(self, strings: Sequence[bytes], size: tuple[int, int]) -> Tensor:
        """ANS byte strings → y_hat (B, C, *size); a malformed string is a `BlendaeError`."""
        self._require_tables()
        indices = []
        for data in strings:
            coder = open_coder(data)
            indices.append(decoding(lambda c=coder: self.decode_from(c, size)))
            check_empty(coder)
        return self.dequantize(torch.from_numpy(np.stack(indices)))
