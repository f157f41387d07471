"""The decoder networks in numpy: the integer-exact layers of `models/exact.py`, derived from
the stored float weights by the same float64 operations, and the float layers of the
factorized models.

Arrays are channels-last, (B, H, W, C) float32. Every operation is written as the torch
decoder does it, one correctly rounded IEEE operation at a time in the same precision, so
the exact networks give the torch decoder's bits: a convolution's products and partial
sums are integers below 2**24, exact in float32 in any order, so a BLAS matrix product
(blocked, fused or not) gives them exactly; GDN's sums are integers below 2**53 in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

ACT_LIMIT = 2**11 - 1  # as in models/exact.py (a test checks the two agree)
GAMMA_LIMIT = 4095
HEADROOM = 2.0
F32 = np.float32
Layer = Callable[[np.ndarray], np.ndarray]


def _patches(x: np.ndarray, k: int) -> np.ndarray:
    """(B, H, W, C) → (B, H, W, k·k·C): each position's k×k neighbourhood (zero padding),
    ordered (kernel row, kernel column, channel)."""
    if k == 1:
        return x
    _, h, w, _ = x.shape
    padded = _padded(x, k // 2)
    return np.concatenate(
        [padded[:, i : i + h, j : j + w] for i in range(k) for j in range(k)], axis=3
    )


def _padded(x: np.ndarray, p: int) -> np.ndarray:
    """(B, H, W, C) with p zeros on every side of H and W."""
    b, h, w, c = x.shape
    padded = np.zeros((b, h + 2 * p, w + 2 * p, c), dtype=x.dtype)
    padded[:, p : p + h, p : p + w] = x
    return padded


def _matrix(weight: np.ndarray) -> np.ndarray:
    """(C_out, C_in, k, k) → (k·k·C_in, C_out), matching `_patches`."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]))


def conv(x: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    """A stride-1 'same' convolution as one matrix product (float32)."""
    patches = _patches(x, k)
    return (patches.reshape(-1, patches.shape[3]) @ matrix).reshape(*x.shape[:3], -1)


def exact_conv(x: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
    """`conv` for `ExactConv`, whose partial sums are all exact integers, so any order of
    the additions gives the same bits. A layer with fewer output than input channels (the
    synthesis's last) multiplies the padded input by every kernel position's weights at
    once and adds the k·k products shifted: it copies the small output k·k times instead
    of the large input (2.3× faster for g_s's last layer here)."""
    b, h, w, c = x.shape
    out_c = matrix.shape[1]
    if k == 1 or out_c >= c:
        return conv(x, matrix, k)
    p = k // 2
    # (k·k·C, out), rows (kernel row, kernel column, channel) → (C, k·k·out)
    by_position = matrix.reshape(k * k, c, out_c).transpose(1, 0, 2).reshape(c, -1)
    y = (_padded(x, p).reshape(-1, c) @ by_position).reshape(b, h + 2 * p, w + 2 * p, -1)
    out = y[:, :h, :w, :out_c].copy()
    for n in range(1, k * k):
        i, j = divmod(n, k)
        out += y[:, i : i + h, j : j + w, n * out_c : (n + 1) * out_c]
    return out


def pixel_shuffle(x: np.ndarray) -> np.ndarray:
    """torch's PixelShuffle(2), channels-last: channel 4c + 2i + j → (2h + i, 2w + j, c)."""
    b, h, w, c4 = x.shape
    c = c4 // 4
    y = x.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y.reshape(b, 2 * h, 2 * w, c))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, F32(0))


def _quantize(x: np.ndarray, step: np.float32) -> np.ndarray:
    """Real values → integer-valued float32 activations (round half to even), saturated."""
    return np.clip(np.rint(x / step), F32(-ACT_LIMIT), F32(ACT_LIMIT))


def _step(amax: np.ndarray) -> float:
    """The activation step from a layer's recorded range, in float64 (the torch layer keeps
    it rounded to float32 for quantizing, and derives its output scale from the float64)."""
    return max(float(amax) * HEADROOM, 1e-6) / ACT_LIMIT


@dataclass(frozen=True)
class ExactConv:
    """`models.exact.ExactConv`: 12-bit activations times two-digit integer weights, or the
    whole integer weights in one product for a batch whose windows hold Σ|a| ≤ `room`."""

    matrix: np.ndarray  # (k·k·C_in, 2·C_out): the high digits' kernels, then the low ones'
    whole: np.ndarray  # (k·k·C_in, C_out): the integer weights
    room: int
    k: int
    base: np.float32
    step: np.float32
    scale: np.ndarray  # (C_out,) float32
    bias: np.ndarray  # (C_out,) float32

    @classmethod
    def derive(cls, weight: np.ndarray, bias: np.ndarray, amax: np.ndarray) -> ExactConv:
        """The integer layer from float weights (C_out, C_in, k, k), as `ExactConv.__init__`."""
        _, c_in, k, _ = weight.shape
        digit = 2**24 // (c_in * k * k * (ACT_LIMIT + 1))
        base = 2 * digit + 1
        w = weight.astype(np.float64)
        wstep = np.maximum(np.abs(w).max(axis=(1, 2, 3)), 1e-12) / (digit * (base + 1))
        w = np.rint(w / wstep[:, None, None, None])
        high = np.rint(w / base)
        digits = np.concatenate([high, w - high * base]).astype(F32)
        step = _step(amax)
        scale = (wstep * step).astype(F32)
        room = (2**24 - 1) // (int(np.abs(w).max()) + base)
        whole = _matrix(w.astype(F32))
        return cls(_matrix(digits), whole, room, k, F32(base), F32(step), scale, bias.astype(F32))

    def _fits(self, a: np.ndarray) -> bool:
        """As the torch layer's `fits` (every sum here is an exact integer)."""
        sums = np.abs(a).sum(axis=3, keepdims=True)
        largest = float(sums.max())
        if largest * self.k * self.k <= self.room or largest > self.room:
            return largest * self.k * self.k <= self.room
        return bool(_patches(sums, self.k).sum(axis=3).max() <= self.room)

    def _digits(self, a: np.ndarray) -> np.ndarray:
        sums = exact_conv(a, self.matrix, self.k)
        c = sums.shape[3] // 2
        out = sums[..., :c] * self.base  # one rounding per operation, as the torch layer
        out += sums[..., c:]
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = _quantize(x, self.step)
        out = exact_conv(a, self.whole, self.k) if self._fits(a) else self._digits(a)
        out *= self.scale
        out += self.bias
        return out


@dataclass(frozen=True)
class ExactGDN:
    """`models.exact.ExactGDN`: integer squares and 12-bit γ summed exactly in float64."""

    gamma_t: np.ndarray  # (C, C) float64 integers: column i weighs output i
    step: np.float32
    scale: np.ndarray  # (C,) float32
    beta: np.ndarray  # (C,) float32
    inverse: bool

    @classmethod
    def derive(
        cls, gamma_sqrt: np.ndarray, beta_sqrt: np.ndarray, amax: np.ndarray, inverse: bool
    ) -> ExactGDN:
        g = gamma_sqrt.astype(np.float64)
        gamma = g * g
        gstep = np.maximum(gamma.max(axis=1), 1e-12) / GAMMA_LIMIT
        gamma_t = np.ascontiguousarray(np.rint(gamma / gstep[:, None]).T)
        step = _step(amax)
        scale = (gstep * step * step).astype(F32)
        b = beta_sqrt.astype(F32)
        return cls(gamma_t, F32(step), scale, b * b + F32(1e-6), inverse)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = _quantize(x, self.step)
        squares = a.astype(np.float64)
        squares *= squares
        norm = (squares @ self.gamma_t).astype(F32)  # exact sums, then one rounding
        norm *= self.scale
        norm += self.beta
        np.sqrt(norm, out=norm)
        a *= self.step
        return a * norm if self.inverse else a / norm


@dataclass(frozen=True)
class FloatConv:
    """A float32 convolution of a factorized model (not exact: see docs/format.md)."""

    matrix: np.ndarray
    k: int
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return conv(x, self.matrix, self.k) + self.bias


@dataclass(frozen=True)
class FloatGDN:
    """`models.layers.GDN` in float32: x·sqrt(β + Σ γ x²) (inverse) or x / sqrt(...)."""

    gamma_t: np.ndarray  # (C, C) float32
    beta: np.ndarray
    inverse: bool

    def __call__(self, x: np.ndarray) -> np.ndarray:
        norm = np.sqrt((x * x) @ self.gamma_t + self.beta)
        return x * norm if self.inverse else x / norm


def network(
    spec: str, prefix: str, weights: Mapping[str, np.ndarray], exact: bool = True
) -> list[Layer]:
    """The layers of `nn.Sequential` `prefix` from its spec, one letter per index: T range
    tracker (exact networks), C 'same' convolution, G GDN, I inverse GDN, S pixel shuffle,
    R ReLU; a digit after C names the nested Sequential's index of the convolution."""
    layers: list[Layer] = []
    amax: np.ndarray | None = None
    for index, kind in enumerate(spec.split()):
        name = f"{prefix}.{index}"
        if kind == "T":
            amax = weights[f"{name}.amax"]
        elif kind[0] == "C":
            name += "".join(f".{d}" for d in kind[1:])
            w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
            if exact:
                assert amax is not None, f"{name} has no range tracker before it"
                layers.append(ExactConv.derive(w, b, amax))
            else:
                layers.append(FloatConv(_matrix(w.astype(F32)), w.shape[2], b.astype(F32)))
            if len(kind) > 1:
                layers.append(pixel_shuffle)
        elif kind in ("G", "I"):
            gs, bs = weights[f"{name}.gamma_sqrt"], weights[f"{name}.beta_sqrt"]
            if exact:
                assert amax is not None, f"{name} has no range tracker before it"
                layers.append(ExactGDN.derive(gs, bs, amax, kind == "I"))
            else:
                g = gs.astype(F32)
                b = bs.astype(F32)
                layers.append(
                    FloatGDN(np.ascontiguousarray((g * g).T), b * b + F32(1e-6), kind == "I")
                )
        else:
            layers.append({"S": pixel_shuffle, "R": relu}[kind])
    return layers


def run(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x
