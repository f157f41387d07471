"""The entropy coder's side of the codec, in numpy and constriction only (no torch).

Both decoders use it: the models' (`models.entropy`, `models.gaussian`) and the torch-free
one (`codec.decode`), so they parse every stream with the same code. It holds the payload's
word layout, coder models built from the stored integer tables (see docs/format.md), the
Gaussian conditional's coding by table entry with escapes, and the raw sign bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import constriction
import numpy as np

from blendae.errors import BlendaeError

PRECISION = 24  # bits of the integer probabilities: constriction's default coders use 24
# A latent beyond its table (a badly predicted σ: photos, unusual blends) is coded as the edge
# symbol plus an escape: the overflow e = |v| − r as its bit length (a fixed table, p ∝ 2^-n)
# and then its bits below the top one (uniform). Latents are capped at ±2^16.
ESCAPE_BITS = 17  # bit lengths 0..16
SIGN_CHUNK = PRECISION  # raw sign bits per coder symbol: one Uniform(2**24) value at most
NUM_SCALES = 64  # entries of the Gauss tables
T = TypeVar("T")


def words_to_bytes(words: np.ndarray) -> bytes:
    """ANS words → little-endian bytes without up to 3 trailing zero bytes (the last word is
    often small); a reader pads with zero bytes to a multiple of 4."""
    data = words.astype("<u4").tobytes()
    strip = min(3, len(data) - len(data.rstrip(b"\0")))
    return data[: len(data) - strip]


def coder_bytes(coder: Any) -> bytes:
    """An ANS coder's words as the payload bytes (`words_to_bytes`)."""
    return words_to_bytes(coder.get_compressed())


def open_coder(data: bytes) -> Any:
    """An ANS decoder over payload bytes (zero-padded to whole 32-bit words)."""
    words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype="<u4").astype(np.uint32)
    return decoding(lambda: constriction.stream.stack.AnsCoder(words))


def decoding(step: Callable[[], T]) -> T:
    """Run one decoding step; the coder's errors on a malformed stream become `BlendaeError`."""
    try:
        return step()
    except (ValueError, RuntimeError) as exc:
        raise BlendaeError(f"corrupt .bae payload: {exc}") from exc


def check_empty(coder: Any) -> None:
    if not coder.is_empty():
        raise BlendaeError("corrupt .bae payload: data left over after the last symbol")


def categorical(pmf: np.ndarray) -> Any:
    """The coder model of integer probabilities `pmf` (each ≥ 1, summing to 2**PRECISION).

    constriction maps weights r to the integer CDF floor(Σ_{j<i} r_j · s) + i with
    s = (2**PRECISION - L) / Σ r. With r = pmf - 1 (integers; every partial sum < 2**24 is
    exact in float32) s is exactly 1, so the coder uses exactly the stored integers."""
    weights = np.asarray(pmf, dtype=np.int64) - 1
    return constriction.stream.model.Categorical(weights.astype(np.float32), perfect=False)


def decode_factorized(coder: Any, models: list[Any], size: tuple[int, int]) -> np.ndarray:
    """Pop one image's factorized table indices (C, *size), channel 0 first."""
    n = size[0] * size[1]
    return np.stack([coder.decode(model, n) for model in models]).reshape(-1, *size)


class GaussianTables:
    """The Gaussian conditional's frozen tables as coder models, and coding by table entry.

    `pmf` (NUM_SCALES, W) and `radius` (NUM_SCALES,): entry k codes v in [−r, r] as symbol
    v + r with probabilities pmf[k, :2r+1]; folded, |v| in [0, r]."""

    def __init__(self, pmf: np.ndarray, radius: np.ndarray) -> None:
        self.radius = np.asarray(radius, dtype=np.int32)
        radii = self.radius.tolist()
        rows = [row[: 2 * r + 1] for row, r in zip(pmf.astype(np.int64), radii, strict=True)]
        halves = [
            np.concatenate([[row[r]], row[r + 1 :] + row[r - 1 :: -1]])
            for row, r in zip(rows, radii, strict=True)
        ]
        # A folded row still sums to 2**PRECISION with every entry >= 1.
        self._models = {False: list(map(categorical, rows)), True: list(map(categorical, halves))}

    def sorted(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For (B, K) table entries: each row's positions sorted by entry (stable), the
        sorted rows' radii, and (B, NUM_SCALES) counts of every entry per row. Values stay
        int32 (they are capped at ±2¹⁶): the arrays of a 2048×2048 image are large."""
        order = np.argsort(indices.astype(np.uint8), axis=1, kind="stable")  # a radix sort
        radius = self.radius[np.take_along_axis(indices, order, axis=1)]
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
        models = self._models[folded]
        order, radius, counts = self.sorted(indices)
        values = np.take_along_axis(symbols.astype(np.int32, copy=False), order, axis=1)
        if folded:
            values = np.abs(values)
            coded = np.minimum(values, radius)
        else:
            coded = np.clip(values, -radius, radius)
            coded += radius
        at_edge = np.abs(values) >= radius
        escaping = set(np.flatnonzero(at_edge.any(axis=1)).tolist())
        ends = np.cumsum(counts, axis=1).tolist()
        for b, (coder, row, n_row) in enumerate(zip(coders, coded, counts.tolist(), strict=True)):
            if b in escaping:
                edge = at_edge[b]
                _encode_escapes(coder, np.abs(values[b, edge]) - radius[b, edge])
            for k in reversed(range(len(n_row))):
                if n_row[k]:
                    stop = ends[b][k]
                    coder.encode_reverse(row[stop - n_row[k] : stop], models[k])

    def decode_batch(
        self, coders: list[Any], indices: np.ndarray, folded: bool = False
    ) -> np.ndarray:
        """Pop the values of (B, K) table entries `indices`, row b off coders[b]: int32
        (`folded`: their magnitudes; `decode_signs` then pops the signs)."""
        models = self._models[folded]
        order, radius, counts = self.sorted(indices)
        values = np.empty(indices.shape, dtype=np.int32)
        one_row_each = len({id(coder) for coder in coders}) == len(coders)
        for b, (coder, n_row) in enumerate(zip(coders, counts.tolist(), strict=True)):
            values[b] = np.concatenate(
                [coder.decode(models[k], n) for k, n in enumerate(n_row) if n] or [[]]
            )
            if not one_row_each:  # a shared stream holds this row's escapes before the next row
                _settle([coder], values[b : b + 1], radius[b : b + 1], folded)
        if one_row_each:  # each stream's escapes follow its one row: every row at once
            _settle(coders, values, radius, folded)
        out = np.empty(indices.shape, dtype=np.int32)
        np.put_along_axis(out, order, values, axis=1)
        return out


def _settle(coders: list[Any], values: np.ndarray, radius: np.ndarray, folded: bool) -> None:
    """Rows of table symbols (in place) → values: centred unless `folded`, and each symbol
    at an edge of its table extended by its escape, popped off its row's coder."""
    if not folded:
        values -= radius
    edge = np.abs(values) == radius
    for b in np.flatnonzero(edge.any(axis=1)).tolist():
        at = edge[b]
        values[b, at] += np.sign(values[b, at]) * _decode_escapes(coders[b], int(at.sum()))


def entries(scale: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """σ (float32) → table entry per element: the number of thresholds ≤ σ (NaN counts as
    0), int64; `GaussianConditional.indices`'s answer, found the same way. For a float32
    σ, σ ≥ t exactly when σ ≥ the smallest float32 ≥ t, so float32 bounds decide as the
    thresholds would. A guess from log σ (the thresholds are log-spaced) lands within one
    entry of the answer on any machine, and one comparison each way settles it: 4.5× as
    fast as numpy's binary search on a batch of 64 latents here."""
    t = np.asarray(thresholds, dtype=np.float64)
    up = t.astype(np.float32)
    up = np.where(up.astype(np.float64) < t, np.nextafter(up, np.float32(np.inf)), up)
    first, last = float(up[0]), float(up[-1])
    width = math.log(last / first) / (len(up) - 1)
    s = np.nan_to_num(scale.astype(np.float32), nan=0.0)
    guess = np.floor((np.log(np.clip(s, first / 2, last * 2)) - math.log(first)) / width)
    k = np.clip(guess + 1, 0, len(up)).astype(np.int64)
    bounds = np.concatenate([[-np.inf], up, [np.inf]]).astype(np.float32)
    k += s >= bounds[k + 1]  # σ ≥ t[k]: one entry up
    k -= s < bounds[k]  # σ < t[k - 1]: one entry down
    return k


def encode_signs(coders: list[Any], symbols: np.ndarray) -> None:
    """Push the signs of the non-zero values of (B, K) `symbols` (position order) as raw
    bits, before anything else of the stream: in 24-bit chunks, a whole one first. The
    ANS coder's first value costs 24 bits whatever it carries (its state starts empty),
    so 24 raw bits there cost nothing extra; any other first symbol wasted ~22 bits."""
    nonzero = symbols != 0
    negative = symbols[nonzero] < 0  # row after row, in position order (bools: a large image)
    end = 0
    for coder, count in zip(coders, np.count_nonzero(nonzero, axis=1).tolist(), strict=True):
        if not count:
            continue
        first, starts, offsets, _ = _sign_chunks(count)
        values = np.add.reduceat(negative[end : end + count] << offsets, starts)  # per chunk
        end += count
        # The whole chunks go on first, so that the first chunk (the short one, if any)
        # pops first.
        coder.encode_reverse(values[1:].astype(np.int32), UNIFORM[SIGN_CHUNK])
        coder.encode_reverse(values[:1].astype(np.int32), UNIFORM[first])


def decode_signs(coders: list[Any], magnitudes: np.ndarray) -> np.ndarray:
    """Pop the signs `encode_signs` pushed and apply them to (B, K) `magnitudes`."""
    out = magnitudes.copy()
    bits = []
    for coder, count in zip(coders, np.count_nonzero(out, axis=1).tolist(), strict=True):
        if not count:
            continue
        first, starts, offsets, chunk = _sign_chunks(count)
        values = np.empty(len(starts), dtype=np.int64)
        values[0] = coder.decode(UNIFORM[first])
        values[1:] = coder.decode(UNIFORM[SIGN_CHUNK], len(starts) - 1)
        bits.append((values[chunk] >> offsets) & 1)
    if bits:  # the non-zero values in row-major order are each row's in position order
        flat = out.reshape(-1)
        flat[np.flatnonzero(flat)] *= 1 - 2 * np.concatenate(bits).astype(out.dtype)
    return out


@lru_cache(maxsize=4096)
def _sign_chunks(count: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """How `count` (≥ 1) signs are chunked, in decoding order: a short chunk first, if any,
    then whole 24-bit ones, so that the chunk pushed first (decoded last) is whole. Returns
    the first chunk's length, each chunk's start, each sign's bit within its chunk and each
    sign's chunk (read-only arrays: one answer serves every row of that count)."""
    first = (count % SIGN_CHUNK or SIGN_CHUNK) if count >= SIGN_CHUNK else count
    starts = np.array([0, *range(first, count, SIGN_CHUNK)], dtype=np.int64)
    chunk = np.repeat(np.arange(len(starts)), np.diff(starts, append=count))
    offsets = np.arange(count) - starts[chunk]
    for array in (starts, offsets, chunk):
        array.flags.writeable = False
    return first, starts, offsets, chunk


# Raw-bit models Uniform(2^n), n = 1..24: sign chunks and the low bits of escapes
UNIFORM = {n: constriction.stream.model.Uniform(1 << n) for n in range(1, SIGN_CHUNK + 1)}


def _escape_pmf() -> np.ndarray:
    """Bit lengths 0..16 with p(n) ∝ 2^-n, as integer probabilities summing to 2**24."""
    weights = np.array([2 ** (ESCAPE_BITS - n) for n in range(ESCAPE_BITS)], dtype=np.int64)
    pmf = weights * ((1 << PRECISION) // weights.sum())
    pmf[0] += (1 << PRECISION) - pmf.sum()
    return pmf


ESCAPE_MODEL = categorical(_escape_pmf())


def _encode_escapes(coder: Any, overflow: np.ndarray) -> None:
    """Push overflows (≥ 0) so that `_decode_escapes` pops them in order."""
    if not len(overflow):
        return
    lengths = np.array([int(e).bit_length() for e in overflow], dtype=np.int32)
    for e, n in zip(overflow[::-1].tolist(), lengths[::-1].tolist(), strict=True):
        if n >= 2:  # the bits below the top one
            low = np.array([e - (1 << (n - 1))], dtype=np.int32)
            coder.encode_reverse(low, UNIFORM[n - 1])
    coder.encode_reverse(lengths, ESCAPE_MODEL)


def _decode_escapes(coder: Any, count: int) -> np.ndarray:
    if not count:
        return np.zeros(0, dtype=np.int64)
    lengths = coder.decode(ESCAPE_MODEL, count)
    out = np.zeros(count, dtype=np.int64)
    for i, n in enumerate(lengths.tolist()):
        if n >= 2:
            low = int(coder.decode(UNIFORM[n - 1]))
            out[i] = (1 << (n - 1)) + low
        else:
            out[i] = n  # 0 or 1
    return out
