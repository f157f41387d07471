"""The data layer: verified dataset files -> uint8 arrays -> blended, normalized tensors.

`sources` fetches and verifies the official files (or a mirror's), `formats` parses them,
`blend` builds and caches the study's blended CIFAR-10/MNIST images, `presets` names the
input spaces. The names below load their module on first use (`blendae.lazy`), so the
torch-free modules import without torch.
"""

from blendae.lazy import attributes

_HOMES = {
    "PRESETS": "presets",
    "get_preset": "presets",
    "BlendedSplits": "blend",
    "Sources": "blend",
    "from_pixels": "blend",
    "load_blended": "blend",
    "pixel_scale": "blend",
    "to_pixels": "blend",
    "fetch": "sources",
    "resolve_cache": "sources",
    "resolve_mirror": "sources",
}
__all__ = sorted(_HOMES)
__getattr__ = attributes(__name__, _HOMES)
