"""One codec for every rate: the hyperprior with gain units (Cui et al., "Asymmetric gained
deep image compression with continuous rate adaptation", CVPR 2021).

A quality q in [0, 100] scales each latent channel before quantization by a gain vector
(a coarser or finer quantizer per channel) and back by an inverse gain vector before the
synthesis; the two are learned separately ("asymmetric"). The vectors are learned at
`levels` evenly spaced anchor qualities and interpolated in the log domain in between.
Training draws a quality per image and weighs its distortion by that quality's λ, spaced
log-evenly over `lmbda`, so one network learns the whole rate–distortion curve.

Two training options share that network more evenly between the rates (they change no
coding, and the shipped general model was trained without them): `balance` β weighs each
image's loss by λ^−β (mean 1 over the batch), since a high-λ image's loss is several times a
low-λ one's and, unweighed, tunes the shared transforms for high rates; `gain_lr` multiplies
the gain vectors' learning rate, since Adam moves a parameter by about the learning rate per
step and at the fine-tuning rates used here the gains barely leave their start.
`benchmarks/variable_rate_cost.py` measures both.

Decoding stays exact: after `update()` both vectors are frozen into tables of the 101
integer qualities (`gain_table`, `inv_gain_table`, float32, saved with the weights), and
the decoder's one extra step is a float32 multiply of the decoded latent by a table row,
which every IEEE machine rounds alike. No exponential runs at decode time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from blendae.errors import BlendaeError
from blendae.models.hyperprior import MeanScaleHyperprior

QUALITIES = 101  # the integer qualities 0..100 a file can name


class GainedHyperprior(MeanScaleHyperprior):
    """`MeanScaleHyperprior` (with its checkerboard context) plus gain units.

    levels: anchor qualities (≥ 2); lmbda: [λ at quality 0, λ at quality 100];
    quality: the quality evaluation (metrics during training) uses; balance: β ≥ 0, the
    training loss of an image is weighed by λ^−β; gain_lr: > 0, the gain vectors' learning
    rate as a multiple of the run's (`lr_scale`, read by the optimizer).
    """

    variable_rate = True

    def __init__(
        self,
        *,
        levels: int = 6,
        lmbda: Sequence[float] = (0.002, 0.3),
        quality: int = 75,
        balance: float = 0.0,
        gain_lr: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        lo, hi = (float(v) for v in lmbda)
        if levels < 2 or not 0 < lo < hi:
            raise BlendaeError(f"gained model: need levels >= 2 and 0 < λ0 < λ100, got {lmbda}")
        if not 0 <= quality < QUALITIES:
            raise BlendaeError(f"gained model: quality {quality} is not in 0..100")
        if not (0 <= balance < math.inf and 0 < gain_lr < math.inf):
            raise BlendaeError(
                f"gained model: need balance >= 0 and gain_lr > 0, got {balance}, {gain_lr}"
            )
        self.balance = float(balance)
        self.lr_scale = {"log_gain": float(gain_lr), "log_inv_gain": float(gain_lr)}
        self.lmbda_range = (lo, hi)
        self.quality = quality
        # Start each anchor at the quantizer step λ implies at high rate (step² ∝ 1/λ),
        # relative to the middle: a model started from a fixed-rate one begins near it.
        mid = math.sqrt(lo * hi)
        log_gain = torch.tensor(
            [0.5 * math.log(self.lmbda_at(100 * k / (levels - 1)) / mid) for k in range(levels)]
        )
        self.log_gain = nn.Parameter(log_gain.view(-1, 1).repeat(1, self.M))
        self.log_inv_gain = nn.Parameter(-log_gain.view(-1, 1).repeat(1, self.M))
        self.register_buffer("gain_table", torch.zeros(QUALITIES, self.M))
        self.register_buffer("inv_gain_table", torch.zeros(QUALITIES, self.M))
        self._q: Tensor | int = quality

    def lmbda_at(self, quality: float | Tensor) -> Any:
        """λ of a quality: log-evenly spaced from λ(0) to λ(100)."""
        lo, hi = self.lmbda_range
        return lo * (hi / lo) ** (quality / 100)

    @staticmethod
    def _curve(log_table: Tensor, q: Tensor) -> Tensor:
        """(levels, M) anchors, qualities (B,) → (B, M) gains, log-linear in between."""
        pos = q / 100 * (len(log_table) - 1)
        lo = pos.floor().clamp(0, len(log_table) - 2).long()
        frac = (pos - lo).unsqueeze(1)
        return torch.exp(log_table[lo] * (1 - frac) + log_table[lo + 1] * frac)

    def _gains(self, log_table: Tensor, table: Tensor) -> Tensor:
        """The gains of the current quality as (B or 1, M, 1, 1)."""
        if isinstance(self._q, Tensor):
            return self._curve(log_table, self._q).unsqueeze(-1).unsqueeze(-1)
        if self.is_updated and self._exact_current and not self.training:  # the coding path
            return table[self._q].view(1, -1, 1, 1)
        q = torch.tensor([float(self._q)], device=log_table.device)
        return self._curve(log_table, q).unsqueeze(-1).unsqueeze(-1)

    def _into(self, y: Tensor) -> Tensor:
        return y * self._gains(self.log_gain, self.gain_table)

    def _out(self, y_hat: Tensor) -> Tensor:
        return y_hat * self._gains(self.log_inv_gain, self.inv_gain_table)

    def forward(self, x: Tensor, quality: int | None = None) -> dict[str, Any]:
        """Training: a quality per image, drawn evenly from [0, 100], its λ in
        `out["lmbda"]` and, with `balance`, its loss weight in `out["weight"]`; evaluation:
        `quality` (default: the model's)."""
        if self.training:
            self._q = torch.rand(len(x), device=x.device) * 100
            out = super().forward(x)
            out["lmbda"] = self.lmbda_at(self._q)
            if self.balance:
                weight = out["lmbda"] ** -self.balance
                out["weight"] = weight / weight.mean()
        else:
            self._q = self._check(self.quality if quality is None else quality)
            out = super().forward(x)
        self._q = self.quality
        return out

    @staticmethod
    def _check(quality: int) -> int:
        if isinstance(quality, bool) or not isinstance(quality, int):
            raise BlendaeError(f"quality must be an integer 0..100, got {quality!r}")
        if not 0 <= quality < QUALITIES:
            raise BlendaeError(f"quality {quality} is not in 0..100")
        return quality

    @torch.no_grad()
    def update(self) -> None:
        """Freeze the entropy tables and the gain tables of the 101 integer qualities."""
        super().update()
        q = torch.arange(QUALITIES, dtype=torch.float64)
        self.gain_table.copy_(self._curve(self.log_gain.detach().double().cpu(), q))
        self.inv_gain_table.copy_(self._curve(self.log_inv_gain.detach().double().cpu(), q))

    def compress(self, x: Tensor, quality: int | None = None, shared: int = 0) -> list[list[bytes]]:
        self._q = self._check(self.quality if quality is None else quality)
        try:
            return super().compress(x, shared)
        finally:
            self._q = self.quality

    def decompress(
        self,
        strings: Sequence[Sequence[bytes]],
        size: tuple[int, int],
        quality: int | None = None,
        shared: int = 0,
    ) -> Tensor:
        self._q = self._check(self.quality if quality is None else quality)
        try:
            return super().decompress(strings, size, shared)
        finally:
            self._q = self.quality
