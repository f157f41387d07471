"""The input spaces (presets) a model can be trained in, and their map to pixels.

Torch-free, so that the command line offers the names and the torch-free decoder maps a
reconstruction to pixels without loading torch; `data.normalize` applies them to tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from blendae.errors import BlendaeError

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Preset:
    """Per-channel normalization of each source before they are averaged."""

    name: str
    cifar_mean: RGB
    cifar_std: RGB
    mnist_mean: RGB
    mnist_std: RGB


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # The study's: CIFAR to [-1, 1]; MNIST (as RGB) with the ImageNet statistics.
        Preset(
            "seed", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        ),
        # No normalization: both stay in [0, 1], so the blend is the pixel mean image / 255.
        Preset("unit", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name`."""
    try:
        return PRESETS[name]
    except KeyError:
        raise BlendaeError(
            f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}"
        ) from None


def pixel_range(preset: Preset) -> tuple[list[float], list[float]]:
    """(lo, hi) per channel, float64: the blends of two all-zero and two all-one images
    (see `data.normalize.to_pixels`)."""
    lo, hi = [], []
    for mm, sm, cm, sc in zip(
        preset.mnist_mean, preset.mnist_std, preset.cifar_mean, preset.cifar_std, strict=True
    ):
        lo.append((-mm / sm - cm / sc) / 2)
        hi.append(((1 - mm) / sm + (1 - cm) / sc) / 2)
    return lo, hi
