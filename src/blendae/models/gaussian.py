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

import constriction
import numpy as np
import torch
from torch import Tensor, nn

from blendae.models.entropy import LIKELIHOOD_BOUND, PRECISION, _LowerBound

SCALE_MIN, SCALE_MAX, NUM_SCALES = 0.11, 48.0, 64  # σ table: log-spaced, as in CompressAI
TAIL_SIGMAS = 6.5  # each table spans ±⌈6.5σ⌉ symbols; outside lies < 1e-10 of the mass
# A latent beyond its table (a badly predicted σ: photos, unusual blends) is coded as the edge
# symbol plus an escape: the overflow e = |v| − r as its bit length (a fixed table, p ∝ 2^-n)
# and then its bits below the top one (uniform). Latents are capped at ±2^16.
ESCAPE_BITS = 17  # bit lengths 0..16
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
        self._coder_models: list[Any] | None = None

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
        self._coder_models = None

    def _load_from_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        stored = state_dict.get(prefix + "_pmf")
        if stored is not None:
            self._pmf = torch.empty_like(stored, device=self._pmf.device)
        self._coder_models = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _models(self) -> list[Any]:
        if not self.is_updated:
            raise RuntimeError("the Gaussian conditional has no tables: run update() first")
        if self._coder_models is None:
            pmf = self._pmf.cpu().numpy().astype(np.int64)
            # Weights pmf - 1 make constriction's quantization reproduce the integers
            # exactly (see EntropyBottleneck.coder_probabilities).
            self._coder_models = [
                constriction.stream.model.Categorical(
                    (row[: 2 * r + 1] - 1).astype(np.float32), perfect=False
                )
                for row, r in zip(pmf, self._radius.tolist(), strict=True)
            ]
        return self._coder_models

    # ---- coding -------------------------------------------------------------------------
    def indices(self, scale: Tensor) -> Tensor:
        """σ (any shape) → table entry per element, int32 in [0, NUM_SCALES)."""
        return torch.bucketize(
            scale.double().contiguous(), self.thresholds, out_int32=True, right=True
        )

    @staticmethod
    def symbols(y: Tensor, mean: Tensor) -> Tensor:
        """round(y − μ) as int32, capped at ±LATENT_LIMIT: what is coded (with an escape
        where it lies beyond its table entry's radius)."""
        return torch.round(y - mean).clamp(-LATENT_LIMIT, LATENT_LIMIT).int()

    @staticmethod
    def _groups(indices: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Positions sorted by table entry (stable) and (entry, start, count) per entry used."""
        order = np.argsort(indices.astype(np.uint8), kind="stable")  # a radix sort
        counts = np.bincount(indices, minlength=NUM_SCALES)
        starts = np.cumsum(counts) - counts
        used = np.flatnonzero(counts)
        groups = zip(used.tolist(), starts[used].tolist(), counts[used].tolist(), strict=True)
        return order, list(groups)

    def encode_into(self, coder: Any, symbols: np.ndarray, indices: np.ndarray) -> None:
        """Push one image's values onto an ANS coder (flat arrays of the same length).

        The decoder pops the values' table symbols group by table entry, smallest entry
        first, each group in position order; then one escape for every symbol at an edge of
        its table, in that same order."""
        models = self._models()
        order, groups = self._groups(indices)
        radius = self._radius.numpy()[indices[order]].astype(np.int64)
        values = symbols[order].astype(np.int64)
        coded = (np.clip(values, -radius, radius) + radius).astype(np.int32)
        at_edge = np.abs(values) >= radius
        _encode_escapes(coder, np.abs(values[at_edge]) - radius[at_edge])
        for k, start, n in reversed(groups):
            coder.encode_reverse(coded[start : start + n], models[k])

    def decode_from(self, coder: Any, indices: np.ndarray) -> np.ndarray:
        """Pop one image's values (int32, like the flat `indices`) off an ANS coder."""
        models = self._models()
        order, groups = self._groups(indices)
        coded = np.empty(len(indices), dtype=np.int64)
        for k, start, n in groups:
            coded[start : start + n] = coder.decode(models[k], n)
        radius = self._radius.numpy()[indices[order]].astype(np.int64)
        values = coded - radius
        at_edge = np.abs(values) == radius
        values[at_edge] += np.sign(values[at_edge]) * _decode_escapes(coder, int(at_edge.sum()))
        out = np.empty(len(indices), dtype=np.int32)
        out[order] = values
        return out


def _escape_model() -> Any:
    """Bit lengths 0..16 with p(n) ∝ 2^-n, as exact integer weights (see `_models`)."""
    weights = np.array([2 ** (ESCAPE_BITS - n) for n in range(ESCAPE_BITS)], dtype=np.int64)
    pmf = weights * ((1 << PRECISION) // weights.sum())
    pmf[0] += (1 << PRECISION) - pmf.sum()
    return constriction.stream.model.Categorical((pmf - 1).astype(np.float32), perfect=False)


ESCAPE_MODEL = _escape_model()


def _encode_escapes(coder: Any, overflow: np.ndarray) -> None:
    """Push overflows (≥ 0) so that `_decode_escapes` pops them in order."""
    if not len(overflow):
        return
    lengths = np.array([int(e).bit_length() for e in overflow], dtype=np.int32)
    for e, n in zip(overflow[::-1].tolist(), lengths[::-1].tolist(), strict=True):
        if n >= 2:  # the bits below the top one
            low = np.array([e - (1 << (n - 1))], dtype=np.int32)
            coder.encode_reverse(low, constriction.stream.model.Uniform(1 << (n - 1)))
    coder.encode_reverse(lengths, ESCAPE_MODEL)


def _decode_escapes(coder: Any, count: int) -> np.ndarray:
    if not count:
        return np.zeros(0, dtype=np.int64)
    lengths = coder.decode(ESCAPE_MODEL, count)
    out = np.zeros(count, dtype=np.int64)
    for i, n in enumerate(lengths.tolist()):
        if n >= 2:
            low = int(coder.decode(constriction.stream.model.Uniform(1 << (n - 1)), 1)[0])
            out[i] = (1 << (n - 1)) + low
        else:
            out[i] = n  # 0 or 1
    return out
