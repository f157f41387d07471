"""Model names → constructors. `kind` tells the training loop which loss applies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from blendae.errors import BlendaeError
from blendae.models.conv import ConvAutoencoder
from blendae.models.factorized import FactorizedPrior
from blendae.models.seed import SeedAutoencoder


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Module]
    kind: str  # "autoencoder": forward(x) -> x_hat; "codec": forward(x) -> {"x_hat", "likelihoods"}
    summary: str


MODELS: dict[str, ModelSpec] = {
    "seed": ModelSpec(SeedAutoencoder, "autoencoder", "the study's architecture, exactly"),
    "conv": ModelSpec(
        ConvAutoencoder, "autoencoder", "configurable conv autoencoder; default: seed at 3x width"
    ),
    "factorized": ModelSpec(
        FactorizedPrior, "codec", "Ballé 2017 codec: GDN transforms, learned factorized prior"
    ),
}

DEFAULT_MODEL = "conv"


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise BlendaeError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct a registered model; bad keyword arguments become a `BlendaeError`."""
    spec = get_spec(name)
    try:
        return spec.build(**kwargs)
    except TypeError as exc:
        raise BlendaeError(f"bad arguments for model {name!r}: {exc}") from exc
