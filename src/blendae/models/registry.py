"""Model names → constructors: the one table the CLI's `--model` choices come from.

Adding a model is adding a file with its class and one line here. What a model is (plain
autoencoder, codec, separator) is told by the model itself (`blendae.models.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from blendae.errors import BlendaeError
from blendae.models.base import SeparationModel
from blendae.models.conv import ConvAutoencoder
from blendae.models.factorized import FactorizedPrior
from blendae.models.gained import GainedHyperprior
from blendae.models.hyperprior import MeanScaleHyperprior
from blendae.models.names import DEFAULT_MODEL, MODEL_NAMES
from blendae.models.seed import SeedAutoencoder
from blendae.models.separation import UNetSeparator


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Module]
    summary: str


MODELS: dict[str, ModelSpec] = {
    "seed": ModelSpec(SeedAutoencoder, "the study's architecture, exactly"),
    "conv": ModelSpec(ConvAutoencoder, "configurable conv autoencoder; default: seed at 3x width"),
    "factorized": ModelSpec(
        FactorizedPrior, "Ballé 2017 codec: GDN transforms, learned factorized prior"
    ),
    "hyperprior": ModelSpec(
        MeanScaleHyperprior,
        "mean-scale hyperprior codec (Minnen 2018) with integer-exact decoding",
    ),
    "gained": ModelSpec(
        GainedHyperprior,
        "variable-rate hyperprior codec: one model, quality 0-100 (gain units, Cui 2021)",
    ),
    "unet-sep": ModelSpec(
        UNetSeparator, "separation: a small U-Net predicting the digit; CIFAR = 2·blend − digit"
    ),
}


if tuple(MODELS) != MODEL_NAMES or DEFAULT_MODEL not in MODELS:
    raise ImportError("models.names.MODEL_NAMES must list the registry's models, in order")


def is_separator(name: str) -> bool:
    """Whether registry model `name` is a separation model (its training needs the sources)."""
    build = MODELS[name].build
    return isinstance(build, type) and issubclass(build, SeparationModel)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct a registered model; bad names and keyword arguments become `BlendaeError`s."""
    if name not in MODELS:
        raise BlendaeError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name].build(**kwargs)
    except TypeError as exc:
        raise BlendaeError(f"bad arguments for model {name!r}: {exc}") from exc
