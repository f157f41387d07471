"""The data layer: verified dataset files -> uint8 arrays -> normalized, blended tensors.

Who owns what:
- `sources` fetches and verifies the official files (or a mirror's) into the cache;
- `formats` parses them (pure parsers); `folder` reads a folder of the user's images into
  its own memory-mapped uint8 cache (`cache`);
- `spec` parses `--data` (one source or a blend of two) and names the data options;
- `presets` names the study's normalizations (torch-free); `normalize` owns input spaces:
  per-source statistics, pixels <-> model space;
- `transforms` augments one source's images; `blend` builds and caches the study's blend;
- `mix` assembles any spec into a run's evaluation tensors and training batches.

The names below load their module on first use (`blendae.lazy`), so the torch-free
modules import without torch.
"""

from blendae.lazy import attributes

_HOMES = {
    "PRESETS": "presets",
    "get_preset": "presets",
    "STUDY": "spec",
    "parse_spec": "spec",
    "Space": "normalize",
    "as_space": "normalize",
    "from_pixels": "normalize",
    "pixel_scale": "normalize",
    "to_pixels": "normalize",
    "BlendedSplits": "blend",
    "Sources": "blend",
    "load_blended": "blend",
    "Data": "mix",
    "TensorSet": "mix",
    "load_data": "mix",
    "fetch": "sources",
    "resolve_cache": "sources",
    "resolve_mirror": "sources",
}
__all__ = sorted(_HOMES)
__getattr__ = attributes(__name__, _HOMES)
