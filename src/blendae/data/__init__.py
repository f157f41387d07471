"""The data layer: verified dataset files -> uint8 arrays -> blended, normalized tensors.

`sources` fetches and verifies the official files (or a mirror's), `formats` parses them,
`blend` builds and caches the study's blended CIFAR-10/MNIST images.
"""

from blendae.data.blend import (
    PRESETS,
    BlendedSplits,
    Sources,
    from_pixels,
    get_preset,
    load_blended,
    pixel_scale,
    to_pixels,
)
from blendae.data.sources import fetch, resolve_cache, resolve_mirror

__all__ = [
    "PRESETS",
    "BlendedSplits",
    "Sources",
    "fetch",
    "from_pixels",
    "get_preset",
    "load_blended",
    "pixel_scale",
    "resolve_cache",
    "resolve_mirror",
    "to_pixels",
]
