"""Atomic checkpoints that load without code execution: one safetensors file per run.

Tensors (model weights, Adam moments, RNG state) are stored under prefixes
`model.`, `optimizer.` and `rng.`; everything else (config, epoch, metric history,
optimizer hyper-parameters, scheduler state) is JSON in the file's metadata.
A plain `model.safetensors` with the weights alone sits beside it for users.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from blendae.errors import BlendaeError
from blendae.files import atomic_write

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
FORMAT = "blendae-checkpoint-1"


@dataclass
class Checkpoint:
    """A plain record of a run's state after `epoch` completed epochs."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]  # epoch, config, metrics, scheduler, command


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, slots in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> None:
    """Write `checkpoint.safetensors` and `model.safetensors` atomically."""
    model = {k: v.detach().cpu().contiguous() for k, v in ckpt.model.items()}
    opt_tensors, opt_meta = _flatten_optimizer(ckpt.optimizer)
    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in ckpt.rng.items()})
    metadata = {
        "format": FORMAT,
        "state": json.dumps(ckpt.state),
        "optimizer": json.dumps(opt_meta),
    }
    atomic_write(run_dir / CHECKPOINT, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    atomic_write(run_dir / WEIGHTS, lambda tmp: save_file(model, tmp))


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read a run's checkpoint; a missing or damaged file is a `BlendaeError`."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise BlendaeError(f"no checkpoint at {path}; train first, or drop --resume")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(path)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        state = json.loads(metadata["state"])
        opt_meta = json.loads(metadata["optimizer"])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise BlendaeError(
            f"checkpoint {path} is damaged ({exc}); delete it to start over"
        ) from exc
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}, "rng": {}}
    for name, value in tensors.items():
        prefix, rest = name.split(".", 1)
        parts[prefix][rest if prefix != "optimizer" else name] = value
    return Checkpoint(
        model=parts["model"],
        optimizer=_unflatten_optimizer(parts["optimizer"], opt_meta),
        rng=parts["rng"],
        state=state,
    )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a weights-only safetensors file with a clear error when it is unreadable."""
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise BlendaeError(f"cannot read model weights {path}: {exc}") from exc
