"""Models: building blocks, entropy models, the model contract, and the registry."""

from blendae.models.base import CompressionModel, SeparationModel
from blendae.models.entropy import bits_per_pixel
from blendae.models.registry import DEFAULT_MODEL, MODELS, build_model, is_separator

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "CompressionModel",
    "SeparationModel",
    "bits_per_pixel",
    "build_model",
    "is_separator",
]
