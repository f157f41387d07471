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
SIGN_CHUNK = PRECISION  # raw sign bits per coder symbol: one Uniform(2**24) value at most


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
        self._coder_models: dict[bool, list[Any]] | None = None

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

    def _models(self, folded: bool = False) -> list[Any]:
        """One coder model per table entry: of v (symbols 0..2r), or folded, of |v| (0..r,
        |v| > 0 taking the mass of v and −v), for values whose signs are coded apart."""
        if not self.is_updated:
            raise RuntimeError("the Gaussian conditional has no tables: run update() first")
        if self._coder_models is None:
            pmf = self._pmf.cpu().numpy().astype(np.int64)
            rows = [row[: 2 * r + 1] for row, r in zip(pmf, self._radius.tolist(), strict=True)]
            halves = [
                np.concatenate([[row[r]], row[r + 1 :] + row[r - 1 :: -1]])
                for row, r in zip(rows, self._radius.tolist(), strict=True)
            ]
            # Weights pmf - 1 make constriction's quantization reproduce the integers
            # exactly (see EntropyBottleneck.coder_probabilities); a folded row still sums
            # to 2**PRECISION with every entry >= 1.
            self._coder_models = {
                key: [
                    constriction.stream.model.Categorical(
                        (row - 1).astype(np.float32), perfect=False
                    )
                    for row in table
                ]
                for key, table in ((False, rows), (True, halves))
            }
        return self._coder_models[folded]

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

    def _sorted(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For (B, K) table entries: each row's positions sorted by entry (stable), the
        sorted rows' radii, and (B, NUM_SCALES) counts of every entry per row. Values stay
        int32 (they are capped at ±2¹⁶): the arrays of a 2048×2048 image are large."""
        order = np.argsort(indices.astype(np.uint8), axis=1, kind="stable")  # a radix sort
        radius = self._radius.numpy()[np.take_along_axis(indices, order, axis=1)]
        rows = np.arange(len(indices))[:, None] * NUM_SCALES
        counts = np.bincount((indices + rows).ravel(), minlength=len(indices) * NUM_SCALES)
        return order, radius, counts.reshape(-1, NUM_SCALES)

    def encode_batch(
        self, coders: list[Any], symbols: np.ndarray, indices: np.ndarray, folded: bool = False
    ) -> None:
        """Push the values of (B, K) `symbols` with table entries `indices`, row b onto
        coders[b]; `folded`: their magnitudes only (push the signs first, `encode_signs`).

        The decoder pops a row's table symbols group by table entry, smallest entry first,
        each group in position order; then one escape for every symbol at an edge of its
        table, in that same order."""
        models = self._models(folded)
        order, radius, counts = self._sorted(indices)
        values = np.take_along_axis(symbols.astype(np.int32, copy=False), order, axis=1)
        if folded:
            values = np.abs(values)
            coded = np.minimum(values, radius)
        else:
            coded = np.clip(values, -radius, radius)
            coded += radius
        at_edge = np.abs(values) >= radius
        for coder, row, value, r, edge, n_row in zip(
            coders, coded, values, radius, at_edge, counts, strict=True
        ):
            if edge.any():
                _encode_escapes(coder, np.abs(value[edge]) - r[edge])
            stop = len(row)
            for k in np.flatnonzero(n_row)[::-1].tolist():
                start = stop - int(n_row[k])
                coder.encode_reverse(row[start:stop], models[k])
                stop = start

    def decode_batch(
        self, coders: list[Any], indices: np.ndarray, folded: bool = False
    ) -> np.ndarray:
        """Pop the values of (B, K) table entries `indices`, row b off coders[b]: int32
        (`folded`: their magnitudes; `decode_signs` then pops the signs)."""
        models = self._models(folded)
        order, radius, counts = self._sorted(indices)
        values = np.empty(indices.shape, dtype=np.int32)
        for b, (coder, n_row) in enumerate(zip(coders, counts.tolist(), strict=True)):
            row = np.concatenate(
                [coder.decode(models[k], n) for k, n in enumerate(n_row) if n] or [[]]
            )
            value = row if folded else row - radius[b]
            edge = np.abs(value) == radius[b]
            if edge.any():
                value[edge] += np.sign(value[edge]) * _decode_escapes(coder, int(edge.sum()))
            values[b] = value
        out = np.empty(indices.shape, dtype=np.int32)
        np.put_along_axis(out, order, values, axis=1)
        return out

    @staticmethod
    def encode_signs(coders: list[Any], symbols: np.ndarray) -> None:
        """Push the signs of the non-zero values of (B, K) `symbols` (position order) as raw
        bits, before anything else of the stream: in 24-bit chunks, a whole one first. The
        ANS coder's first value costs 24 bits whatever it carries (its state starts empty),
        so 24 raw bits there cost nothing extra; any other first symbol wasted ~22 bits."""
        for coder, row in zip(coders, symbols, strict=True):
            negative = (row[row != 0] < 0).astype(np.int64)
            if not len(negative):
                continue
            first, starts, offsets = _sign_chunks(len(negative))
            values = np.add.reduceat(negative << offsets, starts)  # one int per chunk
            # The whole chunks go on first, so that the first chunk (the short one, if any)
            # pops first.
            coder.encode_reverse(values[1:].astype(np.int32), _UNIFORM[SIGN_CHUNK])
            coder.encode_reverse(values[:1].astype(np.int32), _UNIFORM[first])

    @staticmethod
    def decode_signs(coders: list[Any], magnitudes: np.ndarray) -> np.ndarray:
        """Pop the signs `encode_signs` pushed and apply them to (B, K) `magnitudes`."""
        out = magnitudes.copy()
        for coder, row in zip(coders, out, strict=True):
            nonzero = np.flatnonzero(row)
            if not len(nonzero):
                continue
            first, starts, offsets = _sign_chunks(len(nonzero))
            values = np.empty(len(starts), dtype=np.int64)
            values[0] = coder.decode(_UNIFORM[first])
            values[1:] = coder.decode(_UNIFORM[SIGN_CHUNK], len(starts) - 1)
            bits = (np.repeat(values, np.diff(starts, append=len(nonzero))) >> offsets) & 1
            row[nonzero] *= 1 - 2 * bits.astype(row.dtype)
        return out


def _sign_chunks(count: int) -> tuple[int, np.ndarray, np.ndarray]:
    """How `count` (≥ 1) signs are chunked, in decoding order: a short chunk first, if any,
    then whole 24-bit ones, so that the chunk pushed first (decoded last) is whole. Returns
    the first chunk's length, each chunk's start, and each sign's bit within its chunk."""
    first = (count % SIGN_CHUNK or SIGN_CHUNK) if count >= SIGN_CHUNK else count
    starts = np.array([0, *range(first, count, SIGN_CHUNK)], dtype=np.int64)
    offsets = np.arange(count) - np.repeat(starts, np.diff(starts, append=count))
    return first, starts, offsets


# Raw-bit models Uniform(2^n), n = 1..24: sign chunks and the low bits of escapes
_UNIFORM = {n: constriction.stream.model.Uniform(1 << n) for n in range(1, SIGN_CHUNK + 1)}


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
            coder.encode_reverse(low, _UNIFORM[n - 1])
    coder.encode_reverse(lengths, ESCAPE_MODEL)


def _decode_escapes(coder: Any, count: int) -> np.ndarray:
    if not count:
        return np.zeros(0, dtype=np.int64)
    lengths = coder.decode(ESCAPE_MODEL, count)
    out = np.zeros(count, dtype=np.int64)
    for i, n in enumerate(lengths.tolist()):
        if n >= 2:
            low = int(coder.decode(_UNIFORM[n - 1]))
            out[i] = (1 << (n - 1)) + low
        else:
            out[i] = n  # 0 or 1
    return out
