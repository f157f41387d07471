"""Which codec model codes a file: shipped models and run folders, loaded and identified.

A codec is a trained `CompressionModel` with frozen tables, the input space (preset) it
was trained in, and the 4-byte identifier its `.bae` files carry. Shipped models are
listed by `codec.zoo`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from blendae import runs
from blendae.codec import container
from blendae.codec.zoo import DEFAULT, canonical, unknown_model, zoo_entries, zoo_folder
from blendae.data import PRESETS, Space
from blendae.errors import BlendaeError
from blendae.models import CompressionModel, build_model


@dataclass(frozen=True)
class Codec:
    """A loaded codec model ready to code, and what its files need to say about it."""

    name: str
    model: CompressionModel
    model_id: bytes
    # the input space the model was trained in: a study preset's name, or a run's own
    # space (a model trained on other --data); see `blendae.data.to_pixels`
    preset: Space | str
    quality: int | None = None  # a variable-rate model's default quality
    # the side of the images it was trained on: a larger image is coded as patches of
    # that side (`codec.images`); None: whole (the models of 0.3-0.8 as they shipped then)
    patch: int | None = None


def model_id(model: nn.Module) -> bytes:
    """Short hash of every weight and table (names, dtypes, shapes, bytes) in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.digest()[: container.MODEL_ID_BYTES]


def _ready(
    name: str,
    model: nn.Module,
    model_name: str,
    preset: Space | str,
    quality: int | None = None,
    patch: int | None = None,
) -> Codec:
    """Check that `model` (weights loaded) can code, and wrap it as a `Codec`."""
    if not isinstance(model, CompressionModel):
        raise BlendaeError(
            f"{name}: model {model_name!r} is not a codec; train a codec model (e.g. "
            "--model factorized --lambda 0.01)"
        )
    if isinstance(preset, str) and preset not in PRESETS:
        raise BlendaeError(f"{name}: unknown input space (preset) {preset!r}")
    if not model.is_updated:
        raise BlendaeError(
            f"{name}: the model has no coding tables (saved before update()); finish training it"
        )
    model = model.eval().to(memory_format=torch.channels_last)  # faster oneDNN convolutions
    if model.variable_rate and quality is None:
        quality = model.quality
    if patch is not None and not (
        model.patches and patch % model.stride == 0 and 0 < patch <= container.MAX_PATCH
    ):
        raise BlendaeError(
            f"{name}: cannot code in {patch}-pixel patches (a multiple of {model.stride} up to "
            f"{container.MAX_PATCH}, for a model that codes patches)"
        )
    return Codec(name, model, model_id(model), preset, quality, patch)


def load_zoo_file(meta_path: Path, meta: dict[str, Any] | None = None) -> Codec:
    """A model stored as the zoo stores them: NAME.json beside NAME.safetensors."""
    try:
        meta = meta or json.loads(meta_path.read_text(encoding="utf-8"))
        model = build_model(meta["model"], **meta["model_args"])
        model.load_state_dict(load_file(str(meta_path.with_suffix(".safetensors"))))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, RuntimeError) as exc:
        raise BlendaeError(f"model {meta_path} is damaged ({exc}); reinstall it") from exc
    codec = _ready(
        meta["name"], model, meta["model"], meta["preset"], meta.get("quality"), meta.get("patch")
    )
    if codec.model_id.hex() != meta["id"]:
        raise BlendaeError(f"model {meta_path} is damaged: its weights do not match its id")
    return codec


@lru_cache(maxsize=16)
def load_codec(model: str | None = None) -> Codec:
    """A shipped model by name (None: the default one), a zoo-style NAME.json file, or the
    run folder of a codec model."""
    name = DEFAULT if model is None else canonical(model)
    if name in zoo_entries():
        return load_zoo_file(zoo_folder() / f"{name}.json", zoo_entries()[name])
    if name.endswith(".json") and Path(name).is_file():
        return load_zoo_file(Path(name))
    if not Path(name).is_dir():
        raise BlendaeError(
            f"unknown codec model {name!r}; shipped models: {', '.join(zoo_entries())} "
            "(or pass the run folder of a trained codec model, or a model's NAME.json)"
        )
    config, trained = runs.load_model(Path(name))
    patches = getattr(trained, "patches", False)  # (a model that is no codec is refused below)
    patch = config.size if patches and config.size <= container.MAX_PATCH else None
    return _ready(name, trained, config.model, runs.space(Path(name), config), patch=patch)


def codec_for(ident: bytes, model: str | None) -> Codec:
    """The codec that wrote a file with (stored) id `ident`: the one asked for, else a
    shipped one. Check each file with `limits.check_made_by`."""
    if model is not None:
        model = canonical(model)
        codec = load_codec(model)
        if container.names(ident, codec.model_id):
            return codec
    for name, meta in zoo_entries().items():
        if container.names(ident, bytes.fromhex(meta["id"])):
            return load_codec(name)
    asked_id = load_codec(model).model_id.hex() if model else None
    raise unknown_model(ident, model, asked_id)
