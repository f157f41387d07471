"""The learned image codec: entropy model and tables (`entropy`), the `.bae` format
(`stream`), the rate–distortion loss (`rd`) and the user API (`api`).

The API names are re-exported lazily: `blendae.models` imports `codec.entropy`, and an eager
import of `api` here (which imports the model registry) would be circular.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = (
    "compress",
    "compress_batch",
    "compress_paths",
    "decompress",
    "decompress_batch",
    "decompress_paths",
    "load_codec",
)
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module("blendae.codec.api"), name)
    raise AttributeError(f"module 'blendae.codec' has no attribute {name!r}")
