"""The data layer: verified dataset files -> uint8 arrays -> normalized, blended tensors.

Who owns what:
- `sources` fetches and verifies the official files (or a mirror's) into the cache;
- `formats` parses them (pure parsers); `folder` reads a folder of the user's images into
  its own memory-mapped uint8 cache;
- `spec` parses `--data` (one source or a blend of two) and names the data options;
- `normalize` owns input spaces: presets, per-source statistics, pixels <-> model space;
- `transforms` augments one source's images; `blend` builds and caches the study's blend;
- `mix` assembles any spec into a run's evaluation tensors and training batches.
"""

from blendae.data.blend import BlendedSplits, Sources, load_blended
from blendae.data.mix import Data, TensorSet, load_data
from blendae.data.normalize import (
    PRESETS,
    Space,
    as_space,
    from_pixels,
    get_preset,
    pixel_scale,
    to_pixels,
)
from blendae.data.sources import fetch, resolve_cache, resolve_mirror
from blendae.data.spec import STUDY, parse_spec

__all__ = [
    "PRESETS",
    "STUDY",
    "BlendedSplits",
    "Data",
    "Sources",
    "Space",
    "TensorSet",
    "as_space",
    "fetch",
    "from_pixels",
    "get_preset",
    "load_blended",
    "load_data",
    "parse_spec",
    "pixel_scale",
    "resolve_cache",
    "resolve_mirror",
    "to_pixels",
]
