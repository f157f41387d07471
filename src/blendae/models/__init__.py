"""Models: building blocks, entropy models, the model contract, and the registry.

The names below load their module on first use (`blendae.lazy`), so `models.names` imports
without torch.
"""

from blendae.lazy import attributes

_HOMES = {
    "CompressionModel": "base",
    "SeparationModel": "base",
    "bits_per_pixel": "entropy",
    "DEFAULT_MODEL": "names",
    "MODELS": "registry",
    "build_model": "registry",
    "is_separator": "registry",
}
__all__ = sorted(_HOMES)
__getattr__ = attributes(__name__, _HOMES)
