"""Input spaces: how pixels become the numbers a model sees, and back.

Every source is normalized per channel, x = (pixel / 255 − mean) / std, and a blend is the
mean of its two normalized sources. A run's `Space` is the resulting affine map per
channel, stored as the model-space values of pixel 0 (`lo`) and pixel 255 (`hi`); PSNR,
SSIM and image files go through it. Where the mean and std come from is the preset:
- `seed`: the study's, for its CIFAR-10/MNIST blends only (CIFAR mean 0.5 / std 0.5;
  MNIST as RGB with the ImageNet statistics);
- `unit`: none (pixels / 255, so a blend is the pixel mean image / 255);
- `data`: each source's per-channel mean and std over its training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from blendae.data.presets import Preset, get_preset, pixel_range
from blendae.errors import BlendaeError


@dataclass(frozen=True)
class Norm:
    """One source's normalization: x = (pixel / 255 − mean) / std, per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def channels(self, n: int) -> Norm:
        """The same normalization for `n` channels (a gray source copied to RGB)."""
        if len(self.mean) == n:
            return self
        if len(self.mean) != 1:
            raise BlendaeError(f"cannot use a {len(self.mean)}-channel normalization for {n}")
        return Norm(self.mean * n, self.std * n)


UNIT = Norm((0.0,), (1.0,))


def channel_stats(images: Tensor | np.ndarray, chunk: int = 4096) -> Norm:
    """Per-channel mean and std of images (N, C, H, W): uint8 (0..255) from exact
    histograms, float (in [0, 1]) from float64 sums in chunks."""
    x = torch.as_tensor(images)
    n, c = x.shape[0], x.shape[1]
    if x.dtype == torch.uint8:
        levels = np.arange(256, dtype=np.float64) / 255
        counts = [np.bincount(x[:, k].numpy().ravel(), minlength=256) for k in range(c)]
        mean = np.array([levels @ h for h in counts]) / (x[:, 0].numel())
        square = np.array([levels**2 @ h for h in counts]) / (x[:, 0].numel())
        std = np.sqrt(np.maximum(square - mean**2, 0)).clip(min=1e-3)
        return Norm(tuple(mean.tolist()), tuple(std.tolist()))
    s1 = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, chunk):
        part = x[i : i + chunk].to(torch.float64)
        s1 += part.sum(dim=(0, 2, 3))
        s2 += part.square().sum(dim=(0, 2, 3))
    count = n * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = (s2 / count - mean.square()).clamp(min=0).sqrt().clamp(min=1e-3)  # no zero stds
    return Norm(tuple(mean.tolist()), tuple(std.tolist()))


@dataclass(frozen=True)
class Space:
    """A run's input space, per channel: the model-space values of pixel 0 and pixel 255."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @property
    def channels(self) -> int:
        return len(self.lo)

    def to_dict(self) -> dict[str, Any]:
        return {"lo": list(self.lo), "hi": list(self.hi)}

    @classmethod
    def from_dict(cls, values: Any) -> Space:
        """A space from its JSON form, checked (it comes from files)."""
        try:
            lo, hi = tuple(map(float, values["lo"])), tuple(map(float, values["hi"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise BlendaeError(f"bad input space {values!r}: {exc}") from None
        if (
            len(lo) not in (1, 3)
            or len(lo) != len(hi)
            or not all(
                np.isfinite(a) and np.isfinite(b) and b > a for a, b in zip(lo, hi, strict=True)
            )
        ):
            raise BlendaeError(f"bad input space {values!r}: need 1 or 3 channels, lo < hi")
        return cls(lo, hi)


def space_of(norms: list[Norm], channels: int) -> Space:
    """The space of the mean of sources normalized by `norms` (one source: its own map)."""
    norms = [n.channels(channels) for n in norms]
    k = len(norms)
    lo = [sum(-n.mean[c] / n.std[c] for n in norms) / k for c in range(channels)]
    hi = [sum((1 - n.mean[c]) / n.std[c] for n in norms) / k for c in range(channels)]
    return Space(tuple(lo), tuple(hi))


def study_space(preset: Preset | str) -> Space:
    """The space of the study's blend under `preset` (float64, as 0.5 computed it)."""
    lo, hi = pixel_range(get_preset(preset) if isinstance(preset, str) else preset)
    return Space(tuple(lo), tuple(hi))


def as_space(space: Space | Preset | str) -> Space:
    """A `Space`, from itself or from the name of a study preset (older runs and models)."""
    return space if isinstance(space, Space) else study_space(space)


def _range(space: Space | Preset | str) -> tuple[Tensor, Tensor]:
    s = as_space(space)
    return torch.tensor(s.lo, dtype=torch.float64), torch.tensor(s.hi, dtype=torch.float64)


def _per_channel(v: Tensor, like: Tensor) -> Tensor:
    """(C,) -> broadcastable against `like`'s channel axis (-3), in its dtype and device."""
    return v.view(-1, 1, 1).to(dtype=like.dtype, device=like.device)


def to_pixels(x: Tensor, space: Space | Preset | str) -> Tensor:
    """Model-space images (..., C, H, W) -> pixel scale 0..255, float, NOT clamped.

    pixel = (x − lo_c) / (hi_c − lo_c) · 255. For a study blend under `seed` the two halves
    have different stds, so this is the map that sends the blend of two black images to 0
    and of two white images to 255; under `unit` it is exactly (mnist + cifar) / 2 · 255.
    Callers clamp to [0, 255] where they need to.
    """
    lo, hi = _range(space)
    return (x - _per_channel(lo, x)) * _per_channel(255 / (hi - lo), x)


def from_pixels(p: Tensor, space: Space | Preset | str) -> Tensor:
    """Inverse of `to_pixels`: pixel-scale images (..., C, H, W) -> model space."""
    lo, hi = _range(space)
    # Divide by the scale (not multiply by its inverse): for "unit" this is exactly p / 255.
    return p / _per_channel(255 / (hi - lo), p) + _per_channel(lo, p)


def pixel_scale(space: Space | Preset | str) -> Tensor:
    """255 / (hi_c − lo_c), shape (C,), float32: pixel units per model unit, per channel."""
    lo, hi = _range(space)
    return (255 / (hi - lo)).float()
