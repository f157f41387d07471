"""Shipped codec models: `NAME.safetensors` (weights + integer tables) and `NAME.json`.

Each JSON records the registry model, its arguments, λ, the model identifier written into
`.bae` headers, and the command and data that trained it (`scripts/train_zoo.sh`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from blendae.errors import BlendaeError

DEFAULT = "q3"  # the operating point `blendae compress` uses without --model


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


@lru_cache(maxsize=1)
def entries() -> dict[str, dict[str, Any]]:
    """Name → metadata of every shipped model, in name order."""
    found: dict[str, dict[str, Any]] = {}
    for meta_path in sorted(_folder().glob("*.json")):
        meta = json.loads(meta_path.read_text())
        found[meta["name"]] = meta
    return found


def weights_path(name: str) -> Path:
    """Path of a shipped model's safetensors; an unknown name lists the shipped ones."""
    if name not in entries():
        raise BlendaeError(
            f"unknown codec model {name!r}; shipped models: {sorted(entries()) or 'none'} "
            "(or pass a run folder trained with --codec)"
        )
    return _folder() / f"{name}.safetensors"
