"""Post-training calibration of the exact decoders' activation ranges.

An exact network (`exact.py`) quantizes each layer's input to 12-bit integers over a range
its `RangeTracker` set in training: the largest value seen (with a slow decay), times
HEADROOM. One wild batch sets that maximum, and the common values then get few levels. In
the general model of 0.7–0.11 the last synthesis layer's range was ±28.8 for inputs whose
mean magnitude is 0.06: its exact decoder lost 0.75 dB at quality 100 on CIFAR-10 against
its float one, and the context model's single range, set by the large latents of quality
100, cost about 5 % of the bits at quality 0.

`calibrate` sets each tracker's range anew, by coordinate descent over a grid of factors of
its current value, on images given: first the networks that predict the entropy parameters
(h_s, the context model's ctx and ep), for the fewest coded bits, then g_s for the best
decoded pixels. Both scores are means over cases (a set of images at one quality) in the log
domain (bits as log bits, pixels as PSNR), so that every set and quality counts alike and no
set's larger errors outweigh the others. Values beyond a range saturate (a clamp, exact on every
machine). Only the ranges change, so every decoder (torch, numpy, the browser) derives the
calibrated integer networks with its code unchanged; a calibrated model is a new model, with
its own id.

Training calibrates every hyperprior codec at its end (`training.loop`), on its training
images; `scripts/calibrate_zoo.py` calibrated the shipped general model, trained before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from blendae.models.exact import ExactSequential, RangeTracker
from blendae.models.hyperprior import MeanScaleHyperprior

COARSE = tuple(2.0 ** (k / 2) for k in range(-12, 3))  # factors of the start tried first
FINE = (2.0**-0.25, 2.0**-0.125, 2.0**0.125, 2.0**0.25)  # then around the best
RATE_NETS = ("h_s", "ctx", "ep")  # they predict the Gaussian's mean and scale
PIXEL_NETS = ("g_s",)
Pixels = Callable[[Tensor], Tensor]  # the model's input space → 0..255 pixel values


@dataclass
class _Case:
    """One image set at one quality, with what the fixed encoder gives it."""

    x: Tensor  # the images, the model's input
    quality: int | None
    y: Tensor  # g_a's latent as coded (gains applied)
    z_hat: Tensor
    y_hat: Tensor | None = None


@dataclass
class Calibration:
    """The ranges (tracker name → amax) before and chosen, and the scores before and after."""

    ranges_before: dict[str, float]
    ranges: dict[str, float]
    bits_before: float  # mean log2 of the coded bits of y, over the cases
    bits_after: float
    psnr_before: float  # mean PSNR of the exact decoding, over the cases
    psnr_after: float


def _at_quality(model: MeanScaleHyperprior, quality: int | None) -> None:
    """Put a variable-rate model at `quality` (the hook `compress` uses)."""
    if quality is not None:
        model._q = quality


def _trackers(model: nn.Module, net: str) -> list[tuple[str, RangeTracker]]:
    return [
        (f"{net}.{name}.amax", module)
        for name, module in getattr(model, net).named_modules()
        if isinstance(module, RangeTracker)
    ]


def _ranges(model: nn.Module) -> dict[str, float]:
    """Every tracker's range, by its state_dict name."""
    return {
        name: float(tracker.amax)
        for net in (*RATE_NETS, *PIXEL_NETS)
        if hasattr(model, net)
        for name, tracker in _trackers(model, net)
    }


def _rebuild(model: nn.Module, net: str) -> None:
    setattr(model, f"{net}_exact", ExactSequential.from_float(getattr(model, net)))


def unit_pixels(x: Tensor) -> Tensor:
    """The unit preset's input space, [0, 1], as 0..255 pixel values."""
    return x * 255


def _psnr(x_hat: Tensor, x: Tensor, pixels: Pixels) -> float:
    """PSNR of the decoded 8-bit pixels against the input's."""
    decoded = pixels(x_hat).clamp(0, 255).round()
    mse = float((decoded - pixels(x)).square().mean())
    return 10 * math.log10(255**2 / max(mse, 1e-10))


@torch.no_grad()
def _rate_score(model: MeanScaleHyperprior, cases: list[_Case]) -> float:
    """Mean log2 of the bits y costs, coded as the decoder predicts it; keeps each ŷ."""
    total = 0.0
    for case in cases:
        _at_quality(model, case.quality)
        hs = model.h_s_exact(case.z_hat)
        case.y_hat, mean, scale = model._mean_scale(case.y, hs, model._coded, exact=True)
        bits = -torch.log2(model.gaussian.likelihood(case.y_hat, mean, scale)).sum()
        total += math.log2(float(bits))
    return total / len(cases)


@torch.no_grad()
def _pixel_score(model: MeanScaleHyperprior, cases: list[_Case], pixels: Pixels) -> float:
    """Mean PSNR of the exact decoding of each case's ŷ."""
    total = 0.0
    for case in cases:
        _at_quality(model, case.quality)
        total += _psnr(model.g_s_exact(model._out(case.y_hat)), case.x, pixels)
    return total / len(cases)


def _descend(
    model: MeanScaleHyperprior,
    nets: Sequence[str],
    score: Callable[[], float],
    best: float,
    log: Callable[[str], None],
) -> float:
    """Coordinate descent on the trackers of `nets` from the score `best` of the current
    ranges: each range in turn takes the grid factor with the best score (lower is better),
    first coarse, then fine; → the best score."""
    for factors in (COARSE, FINE):
        for net in nets:
            for name, tracker in _trackers(model, net):
                start = float(tracker.amax)
                chosen = start
                for factor in factors:
                    tracker.amax.fill_(start * factor)
                    _rebuild(model, net)
                    value = score()
                    if value < best - 1e-9:
                        best, chosen = value, float(tracker.amax)
                tracker.amax.fill_(chosen)
                _rebuild(model, net)
                log(f"  {name}: {start:.4g} -> {chosen:.4g} (score {best:.5f})")
    return best


@torch.no_grad()
def calibrate(
    model: MeanScaleHyperprior,
    cases: Sequence[tuple[Tensor, int | None]],
    log: Callable[[str], None] = lambda _: None,
    pixels: Pixels = unit_pixels,
) -> Calibration:
    """Choose `model`'s tracker ranges (in place) from `cases`: (images in the model's input
    space, the quality to code them at, None for a fixed-rate model); `pixels` maps that
    space to 0..255. The model must be updated (its entropy tables frozen). The encoder's
    side is unchanged."""
    if not model.is_updated:
        raise ValueError("calibrate an updated model (its entropy tables frozen)")
    model.eval()
    default = getattr(model, "quality", None)
    before = _ranges(model)
    chosen = []
    for x, quality in cases:
        _at_quality(model, quality)
        y = model._into(model.g_a(x))
        z_hat, _ = model.entropy_bottleneck(model.h_a(y))
        chosen.append(_Case(x, quality, y, z_hat))
    try:
        nets = [n for n in RATE_NETS if hasattr(model, n)]
        bits_before = _rate_score(model, chosen)
        psnr_before = _pixel_score(model, chosen, pixels)
        log(f"rate networks {', '.join(nets)}: mean log2 bits {bits_before:.5f}")
        _descend(model, nets, lambda: _rate_score(model, chosen), bits_before, log)
        bits_after = _rate_score(model, chosen)  # leaves the ŷ of the chosen ranges
        psnr_start = _pixel_score(model, chosen, pixels)
        log(f"g_s: mean PSNR {psnr_start:.4f} dB with the new ŷ")
        psnr_after = -_descend(
            model, PIXEL_NETS, lambda: -_pixel_score(model, chosen, pixels), -psnr_start, log
        )
    finally:
        _at_quality(model, default)
    return Calibration(before, _ranges(model), bits_before, bits_after, psnr_before, psnr_after)
