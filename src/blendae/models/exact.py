"""Integer-exact inference: a decoder whose output has the same bits on every CPU.

A float convolution sums its products in an order that depends on the instruction set, the
library's blocking and the thread count, so its last bits differ between machines; in a
codec that changes decoded pixels, and where the network decides how the stream is parsed,
it breaks decoding (Ballé, Johnston & Minnen, "Integer networks for data compression with
latent-variable models", ICLR 2019). Here every convolution multiplies integers: 12-bit
activations with weights (one scale per output channel) split into two small signed digits,
both digit kernels in one call. Every partial sum stays below 2**24, so float32 adds it
exactly in any order and on any machine. Everything else is one correctly rounded IEEE-754
operation at a time (multiply, add, divide, sqrt, round, max), which every CPU computes
alike. GDN's squares are summed in float64, where they stay below 2**53.

The float network is trained as usual; `RangeTracker`s inside it record how large each
quantized activation gets, and `ExactSequential.from_float` derives the integer network
from the float weights and those ranges. The derivation is itself a chain of exact or
correctly rounded float64 operations (max, divide, round), so every machine derives the
same integers from the same stored weights: the exact network is rebuilt after loading
and never stored.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendae.models.layers import GDN

ACT_LIMIT = 2**11 - 1  # activations are 12-bit signed integers
MIN_DIGIT = 7  # weight digits of at least ±7 (weights of at least ±112 levels)
MAX_FAN_IN = 2**24 // ((ACT_LIMIT + 1) * MIN_DIGIT)  # 1170: a 3×3 layer on 130 channels
GAMMA_LIMIT = 4095  # GDN's γ as 12-bit integers: Σ γ·a² < 2**53 for up to 2**19 channels
HEADROOM = 2.0  # activation range = HEADROOM × the largest value seen in training
DECAY = 0.999  # per step: the recorded maximum forgets the first, wilder steps


class RangeTracker(nn.Module):
    """Identity that records how large its input gets in training (one scale per tensor).

    Placed before every layer that `ExactSequential` quantizes; its `amax` buffer is saved
    with the weights and sets that layer's activation step."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("amax", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                seen = x.detach().abs().max().float()
                self.amax.copy_(torch.maximum(self.amax * DECAY, seen))
        return x


class _Derived(nn.Module):
    """An exact layer: its tensors are derived from the float layer, so they are buffers
    outside the state_dict (never saved, rebuilt after loading)."""

    def _keep(self, name: str, tensor: Tensor) -> None:
        self.register_buffer(name, tensor, persistent=False)


def _quantize(x: Tensor, step: Tensor) -> Tensor:
    """Real values → integer-valued float32 activations, saturated at ±ACT_LIMIT."""
    return (x / step).round_().clamp_(-ACT_LIMIT, ACT_LIMIT)


def _step(tracker: RangeTracker) -> float:
    return max(float(tracker.amax) * HEADROOM, 1e-6) / ACT_LIMIT


class ExactConv(_Derived):
    """A Conv2d on integer activations and integer weights: its sums are exact by bounds.

    Activations are 12-bit integers. Weights are integers w = B·w₁ + w₀ with two signed
    digits |w₁|, |w₀| ≤ d, where d is the largest digit for which fan_in · 2¹¹ · d ≤ 2²⁴
    (d = 14 for a 3×3 layer on 64 channels: weights of about ±400 levels); both digit
    kernels run in one convolution as 2·C_out output channels, every sum exact in float32,
    and the layer's output is fl(fl(fl(fl(H·B) + L)·scale) + bias) of the two sums H, L.

    That bound is for the largest activations. Where they are smaller, one kernel of the
    whole weights gives the same bits at half the work: if every output's window holds
    Σ|a| ≤ `room`, each partial sum of Σ a·w, and H·B, stay integers below 2²⁴, so that
    sum is exact and equals fl(fl(H·B) + L). A call takes that path when all its windows
    allow it (`fits`), else the two digits: a whole batch either way, so the convolution's
    shapes (and oneDNN's cached kernels for them) stay few.
    """

    def __init__(self, conv: nn.Conv2d, step: float) -> None:
        super().__init__()
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        digit = 2**24 // (fan_in * (ACT_LIMIT + 1))
        if digit < MIN_DIGIT or conv.groups != 1:
            raise ValueError(f"exact convolution needs fan-in <= {MAX_FAN_IN}, got {fan_in}")
        self.stride, self.padding = conv.stride, conv.padding
        self.base = 2 * digit + 1
        w = conv.weight.detach().double()
        wstep = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / (digit * (self.base + 1))
        w = torch.round(w / wstep.view(-1, 1, 1, 1))
        high = torch.round(w / self.base)
        self._keep("weight", torch.cat([high, w - high * self.base]).float())
        self._keep("whole", w.float())
        # |a·w| summed over a window stays below 2²⁴, and so does |H·B| ≤ Σ|a|·(|w| + B).
        self.room = (2**24 - 1) // (int(w.abs().max()) + self.base)
        self._keep("window", torch.ones(1, 1, *conv.kernel_size))
        self._keep("step", torch.tensor(step, dtype=torch.float32))
        self._keep("scale", (wstep * step).float().view(1, -1, 1, 1))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(wstep)
        self._keep("bias", bias.float().view(1, -1, 1, 1).clone())  # not a view

    def fits(self, a: Tensor) -> bool:
        """Every window of the batch holds Σ|a| ≤ `room` (sums that are exact themselves: a
        window holds at most MAX_FAN_IN · 2047 < 2²⁴). The largest position's sum s settles
        most batches at once: k²·s ≤ room fits, s > room does not."""
        sums = a.abs().sum(dim=1, keepdim=True)
        largest = float(sums.max())
        if largest * self.window.numel() <= self.room or largest > self.room:
            return largest * self.window.numel() <= self.room
        windows = F.conv2d(sums, self.window, None, self.stride, self.padding)
        return bool(windows.max() <= self.room)

    def _digits(self, a: Tensor) -> Tensor:
        high, low = F.conv2d(a, self.weight, None, self.stride, self.padding).chunk(2, dim=1)
        return (high * self.base).add_(low)  # one rounding per operation, as written out

    def _whole(self, a: Tensor) -> Tensor:
        return F.conv2d(a, self.whole, None, self.stride, self.padding)

    def forward(self, x: Tensor) -> Tensor:
        a = _quantize(x, self.step)
        out = self._whole(a) if self.fits(a) else self._digits(a)
        return out.mul_(self.scale).add_(self.bias)


class ExactGDN(_Derived):
    """GDN or IGDN with integer squares and 12-bit integer γ, summed exactly in float64."""

    def __init__(self, gdn: GDN, step: float) -> None:
        super().__init__()
        self.inverse = gdn.inverse
        gamma = gdn.gamma_sqrt.detach().double() ** 2  # (C, C), row i: weights of output i
        gstep = gamma.amax(dim=1).clamp_min(1e-12) / GAMMA_LIMIT
        self._keep("gamma", torch.round(gamma / gstep[:, None]))  # small integers
        self._keep("step", torch.tensor(step, dtype=torch.float32))
        self._keep("scale", (gstep * step * step).float())
        self._keep("beta", (gdn.beta_sqrt.detach() ** 2 + 1e-6).float())

    def forward(self, x: Tensor) -> Tensor:
        a = _quantize(x, self.step)
        b, c, h, w = a.shape
        squares = a.permute(0, 2, 3, 1).double().square_().reshape(-1, c)  # exact integers
        # (C, P) = γ·squaresᵀ: exact sums (this orientation ran faster), then one rounding
        sums = torch.mm(self.gamma, squares.t()).float()
        norm = sums.mul_(self.scale.view(-1, 1)).add_(self.beta.view(-1, 1))
        # torch's float32 sqrt (MKL's) is not correctly rounded: 1 in 6 results is one ulp
        # off, and which ones may depend on the CPU. numpy's is (the IEEE instruction), and
        # equals the float64 sqrt rounded to float32 that 0.3–0.9 computed here (and still
        # compute on a GPU, where a model may be evaluated after training; files decode on
        # the CPU).
        if norm.is_cpu:
            np.sqrt(norm.numpy(), out=norm.numpy())
        else:
            norm = norm.double().sqrt_().float()
        # back to the activations' channels-last order: one transposed copy here costs less
        # than multiplying tensors of two layouts
        norm = norm.t().contiguous().view(b, h, w, c).permute(0, 3, 1, 2)
        xq = a.mul_(self.step)
        return xq.mul_(norm) if self.inverse else xq.div_(norm)


class ExactSequential(nn.Module):
    """The exact counterpart of a float `nn.Sequential`: float32 in and out.

    Supports Conv2d and GDN (each preceded by a `RangeTracker`), PixelShuffle, ReLU and
    nested Sequentials, the layers the codec's decoders are made of."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    @classmethod
    @torch.no_grad()
    def from_float(cls, net: nn.Module) -> ExactSequential:
        layers: list[nn.Module] = []
        tracker: RangeTracker | None = None
        for module in _flatten(net):
            if isinstance(module, RangeTracker):
                tracker = module
                continue
            if isinstance(module, nn.Conv2d | GDN):
                if tracker is None:
                    raise ValueError(f"{type(module).__name__} has no RangeTracker before it")
                exact = ExactConv if isinstance(module, nn.Conv2d) else ExactGDN
                layers.append(exact(module, _step(tracker)))  # type: ignore[arg-type]
                tracker = None
            elif isinstance(module, nn.ReLU):
                layers.append(nn.ReLU(inplace=True))  # on a fresh tensor: no copy needed
            elif isinstance(module, nn.PixelShuffle):
                layers.append(module)
            else:
                raise ValueError(f"no exact version of {type(module).__name__}")
        return cls(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.float().contiguous(memory_format=torch.channels_last))


def _flatten(net: nn.Module) -> list[nn.Module]:
    if isinstance(net, nn.Sequential):
        return [m for child in net for m in _flatten(child)]
    return [net]
