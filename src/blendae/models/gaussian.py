"""The Gaussian conditional of a mean–scale hyperprior, with frozen integer tables.

Each latent is Gaussian with its own mean μ and scale σ, both predicted by the decoder from
side information (Minnen, Ballé & Toderici, NeurIPS 2018). For coding, σ is snapped to one
of `SCALES` (a fixed log-spaced table) and each table entry gets an integer probability
table, computed once by `update()` and stored with the weights: what the coder sees never
depends on the machine's floating point. Which entry a latent uses is decided by comparing
σ with stored thresholds, so an exactly computed σ (see `exact.py`) parses identically
everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from blendae.ans import NUM_SCALES, GaussianTables, decode_signs, encode_signs
from blendae.models.entropy import LIKELIHOOD_BOUND, PRECISION, _LowerBound

SCALE_MIN, SCALE_MAX = 0.11, 48.0  # σ table of NUM_SCALES entries: log-spaced, as in CompressAI
TAIL_SIGMAS = 6.5  # each table spans ±⌈6.5σ⌉ symbols; outside lies < 1e-10 of the mass
# Latents are capped at ±2^16; beyond its table entry, one is coded with an escape (`ans`).
LATENT_LIMIT = 2**16


def scale_table() -> Tensor:
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES))


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2))


class GaussianConditional(nn.Module):
    """Likelihoods of y under N(μ, σ²) convolved with a unit box; ANS coding by table."""

    def __init__(self) -> None:
        super().__init__()
        table = scale_table().double()
        # Entry k is used for σ in [threshold[k-1], threshold[k]): geometric midpoints.
        self.register_buffer("thresholds", torch.sqrt(table[1:] * table[:-1]))
        self.register_buffer("_pmf", torch.zeros(NUM_SCALES, 0, dtype=torch.int32))
        self.register_buffer("_radius", torch.zeros(NUM_SCALES, dtype=torch.int32))
        self._coding: GaussianTables | None = None

    def likelihood(self, y_hat: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """P(y_hat ± ½) per element, with σ bounded below by the table's smallest entry."""
        scale = _LowerBound.apply(scale, SCALE_MIN)
        v = (y_hat - mean).abs()
        lik = _normal_cdf((0.5 - v) / scale) - _normal_cdf((-0.5 - v) / scale)
        return _LowerBound.apply(lik, LIKELIHOOD_BOUND)

    # ---- the frozen tables --------------------------------------------------------------
    @property
    def is_updated(self) -> bool:
        return self._pmf.shape[1] > 0

    @torch.no_grad()
    def update(self) -> None:
        """Integer tables for every σ of the table (float64, once; stored, never recomputed)."""
        table = scale_table().double()
        radius = torch.ceil(TAIL_SIGMAS * table).long().clamp_min(1)
        width = int(2 * radius.max() + 1)
        total = 1 << PRECISION
        pmf = torch.zeros(NUM_SCALES, width, dtype=torch.long)
        for k, (sigma, r) in enumerate(zip(table.tolist(), radius.tolist(), strict=True)):
            v = torch.arange(-r, r + 1, dtype=torch.float64)
            upper = _normal_cdf((v + 0.5) / sigma)
            lower = _normal_cdf((v - 0.5) / sigma)
            upper[-1], lower[0] = 1.0, 0.0  # the edge symbols take the tails
            mass = (upper - lower).clamp_min(0)
            mass = mass / mass.sum()
            n = 2 * r + 1
            row = torch.floor(mass * (total - n)).long() + 1  # every symbol ≥ 1
            row[r] += total - row.sum()  # the rounding deficit goes to the mode
            pmf[k, :n] = row
        assert bool((pmf.sum(dim=1) == total).all())
        self._pmf = pmf.to(torch.int32)
        self._radius = radius.to(torch.int32)
        self._coding = None

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        stored = state_dict.get(prefix + "_pmf")
        if stored is not None:
            self._pmf = torch.empty_like(stored, device=self._pmf.device)
        self._coding = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _tables(self) -> GaussianTables:
        """The tables as coder models (see `blendae.ans.GaussianTables`), built once."""
        if not self.is_updated:
            raise RuntimeError("the Gaussian conditional has no tables: run update() first")
        if self._coding is None:
            self._coding = GaussianTables(self._pmf.cpu().numpy(), self._radius.cpu().numpy())
        return self._coding

    # ---- coding -------------------------------------------------------------------------
    def indices(self, scale: Tensor) -> Tensor:
        """σ (any shape, float32) → table entry per element, int64 in [0, NUM_SCALES).

        The entry is the number of thresholds t ≤ σ, decided by exact comparisons: for a
        float32 σ, σ ≥ t exactly when σ ≥ the smallest float32 ≥ t, so float32 bounds give
        the float64 answer. A guess from log σ (the thresholds are log-spaced) lands within
        one entry of it on any machine, and one comparison each way settles it, three times
        faster than a binary search."""
        up = self.thresholds.float()
        up = torch.where(up.double() < self.thresholds, torch.nextafter(up, up + 1), up)
        first, last = float(up[0]), float(up[-1])
        width = math.log(last / first) / (len(up) - 1)
        s = scale.float().nan_to_num(0.0)
        guess = (s.clamp(first / 2, last * 2).log_().sub_(math.log(first)).div_(width)).floor_()
        k = guess.add_(1).clamp_(0, len(up)).long()
        bounds = torch.cat([up.new_full((1,), -math.inf), up, up.new_full((1,), math.inf)])
        k += (s >= bounds[k + 1]).long()  # σ ≥ t[k]: one entry up
        k -= (s < bounds[k]).long()  # σ < t[k - 1]: one entry down
        return k

    @staticmethod
    def symbols(y: Tensor, mean: Tensor) -> Tensor:
        """round(y − μ) as int32, capped at ±LATENT_LIMIT: what is coded (with an escape
        where it lies beyond its table entry's radius)."""
        return torch.round(y - mean).clamp(-LATENT_LIMIT, LATENT_LIMIT).int()

    def encode_batch(
        self, coders: list[Any], symbols: np.ndarray, indices: np.ndarray, folded: bool = False
    ) -> None:
        """Push (B, K) `symbols` with table entries `indices` (`GaussianTables.encode_batch`)."""
        self._tables().encode_batch(coders, symbols, indices, folded)

    def decode_batch(
        self, coders: list[Any], indices: np.ndarray, folded: bool = False
    ) -> np.ndarray:
        """Pop the values of (B, K) table entries `indices` (`GaussianTables.decode_batch`)."""
        return self._tables().decode_batch(coders, indices, folded)

    encode_signs = staticmethod(encode_signs)
    decode_signs = staticmethod(decode_signs)
