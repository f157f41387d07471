"""The run folder's one owner: its file names, config and checkpoint I/O, the resume rule,
the run lock, and loading a run's trained model.

A run folder `runs/NAME/` holds `config.json` (the `RunConfig`), `checkpoint.safetensors`
(weights, Adam state, RNG state; epoch, metric history and commands as JSON metadata),
`model.safetensors` (weights alone), `metrics.jsonl` and the report. Nothing in it records
where the folder is, so a copied or moved run resumes in place. Every file loads without
code execution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from blendae.config import RESUMABLE, RunConfig
from blendae.data.normalize import Space, as_space
from blendae.errors import BlendaeError
from blendae.files import atomic_write, atomic_write_text, ensure_dir
from blendae.models import build_model

CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
FINAL = "final.json"
SUMMARY = "summary.md"
LOSS_PLOT = "loss.png"
RECONSTRUCTIONS = "reconstructions.png"
TENSORBOARD = "tensorboard"  # a folder of TensorBoard event files
LOCK = ".lock"
FORMAT = "blendae-checkpoint-1"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per run folder is then unguarded
    fcntl = None  # type: ignore[assignment]


@dataclass
class Checkpoint:
    """A plain record of a run's state after `state["epoch"]` completed epochs."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]  # epoch, metrics, commands, machine


# ---- config -----------------------------------------------------------------------------
def load_config(run_dir: Path) -> RunConfig:
    """The run's `RunConfig`; a missing or malformed file is a `BlendaeError`."""
    path = run_dir / CONFIG
    if not path.is_file():
        raise BlendaeError(f"{run_dir} is not a blendae run folder (no {CONFIG}); train first")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BlendaeError(f"cannot read run config {path}: {exc}") from exc
    try:
        return RunConfig.from_dict(values)
    except (BlendaeError, TypeError) as exc:
        raise BlendaeError(f"run config {path} is invalid: {exc}") from exc


def save_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_text(run_dir / CONFIG, config.to_json())


def check_resume(saved: RunConfig, config: RunConfig) -> None:
    """The resume rule: only the `RESUMABLE` settings may differ from the saved ones (the
    others would make the run a different experiment)."""
    clashes = [
        "--" + f.name.replace("_", "-").replace("lmbda", "lambda")
        for f in dataclasses.fields(RunConfig)
        if f.name not in RESUMABLE and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if clashes:
        raise BlendaeError(
            f"cannot resume with different {', '.join(clashes)}; "
            "drop those options or start a new run in another folder"
        )


def resumed_config(saved: RunConfig, given: dict[str, Any]) -> RunConfig:
    """The saved config with the options given on resume applied, checked by the rule."""
    config = dataclasses.replace(saved, **given)
    config.validate()
    check_resume(saved, config)
    return config


def is_restartable(path: Path) -> bool:
    """What a run stopped before its first checkpoint leaves: its config, lock, temp files."""
    return path.name in (CONFIG, LOCK) or (path.name.startswith(".") and path.suffix == ".tmp")


# ---- checkpoint -------------------------------------------------------------------------
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
    """Write `checkpoint.safetensors`, then `model.safetensors`, each atomically."""
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


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).is_file()


def _damaged(path: Path, exc: Exception) -> BlendaeError:
    return BlendaeError(f"checkpoint {path} is damaged ({exc}); delete it to start over")


def load_state(run_dir: Path) -> dict[str, Any]:
    """The checkpoint's JSON state alone (epoch, metrics, commands, machine), without
    reading its tensors: what the report needs."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise BlendaeError(f"no checkpoint at {path}; train first")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT!r}")
        state = json.loads(metadata["state"])
        if not isinstance(state.get("epoch"), int) or not isinstance(state.get("metrics"), list):
            raise ValueError("its state has no epoch count or metric history")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(path, exc) from exc
    return state


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read a run's checkpoint; a missing or damaged file is a `BlendaeError`."""
    state = load_state(run_dir)
    path = run_dir / CHECKPOINT
    try:
        with safe_open(path, framework="pt") as f:
            opt_meta = json.loads((f.metadata() or {})["optimizer"])
        parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}, "rng": {}}
        for name, value in load_file(path).items():
            prefix, rest = name.split(".", 1)
            parts[prefix][rest if prefix != "optimizer" else name] = value
        optimizer = _unflatten_optimizer(parts["optimizer"], opt_meta)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(path, exc) from exc
    _check_finite(parts["model"], path)
    return Checkpoint(parts["model"], optimizer, parts["rng"], state)


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BlendaeError(
                f"{path} holds non-finite values in {name!r}: the file is damaged or the run "
                "diverged; delete it (or the run) to start over"
            )


def write_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the run's history, so it always matches the checkpoint."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(m) + "\n" for m in metrics))


# ---- the trained model ------------------------------------------------------------------
def model_args(config: RunConfig, channels: int) -> dict[str, Any]:
    """The model's constructor arguments: `--model-args`, and 1 input channel for gray data
    (`channels`: the run's data, as recorded in its checkpoint)."""
    if channels == 1:
        return {"in_channels": 1, **config.model_args}
    return dict(config.model_args)


def _recorded(run_dir: Path) -> dict[str, Any]:
    """The checkpoint's JSON state; {} for a folder holding weights alone (an older export)."""
    return load_state(run_dir) if has_checkpoint(run_dir) else {}


def space(run_dir: Path, config: RunConfig) -> Space:
    """The run's input space: recorded in its checkpoint since 0.6, else its study preset."""
    recorded = _recorded(run_dir).get("space")
    return Space.from_dict(recorded) if recorded is not None else as_space(config.preset)


def load_model(run_dir: Path) -> tuple[RunConfig, nn.Module]:
    """The config and trained model (`model.safetensors`) of a run, in eval mode on the CPU."""
    config = load_config(run_dir)
    model = build_model(config.model, **model_args(config, _recorded(run_dir).get("channels", 3)))
    path = run_dir / WEIGHTS
    weights = _read_weights(path)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BlendaeError(f"{path} does not fit model {config.model!r}: {first}") from exc
    return config, model.eval()


def init_from(model: nn.Module, run_dir: Path) -> list[str]:
    """Start `model` from the trained weights of run `run_dir` (fine-tuning a model that
    extends it), or of a zoo-style model file `NAME.json` (its `NAME.safetensors`); → the
    names of its tensors the run lacks, which keep their initialization."""
    path = run_dir.with_suffix(".safetensors") if run_dir.suffix == ".json" else run_dir / WEIGHTS
    weights = _read_weights(path)
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BlendaeError(f"--init-from {run_dir}: its weights do not fit: {first}") from exc
    if result.unexpected_keys:
        raise BlendaeError(
            f"--init-from {run_dir}: the model has no place for its weights "
            f"{', '.join(result.unexpected_keys[:3])}; is it the same architecture?"
        )
    return list(result.missing_keys)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise BlendaeError(f"cannot read model weights {path}: {exc}") from exc
    _check_finite(weights, path)
    return weights


# ---- one writer per run folder ----------------------------------------------------------
@contextlib.contextmanager
def lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's exclusive lock, or fail at once naming the holder.

    The lock is an OS advisory lock (flock): it dies with its process, so a run killed by
    any means (kill -9 included) never blocks the next one. A call that fails before the
    run wrote its config leaves nothing behind: no lock file, no folder it created.
    """
    created_dir = not run_dir.exists()
    ensure_dir(run_dir)
    path = run_dir / LOCK
    created_file = not path.exists()
    if fcntl is None:
        yield
        return
    try:
        handle = path.open("a+")
    except OSError as exc:
        raise BlendaeError(f"cannot create lock file {path}: {exc.strerror}") from exc
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise BlendaeError(f"{run_dir} is in use by process {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            if created_file and not (run_dir / CONFIG).exists():
                # Safe while locked: a process that opened the file meanwhile failed at once.
                path.unlink(missing_ok=True)
                if created_dir:
                    with contextlib.suppress(OSError):
                        run_dir.rmdir()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
