"""Export a finished codec run into the shipped zoo: `python scripts/export_zoo.py RUN NAME`.

Weights are stored as float16 (half the size; the integer tables stay int32) and loaded back
as float32; the model id is computed from that loaded model, so it matches what users get.
The JSON records the run's config, final metrics, the training command and the data.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save_file

from blendae import runs
from blendae.codec import loader
from blendae.data import load_blended
from blendae.files import atomic_write, write_json


def export(run: Path, name: str, command: str, dest: Path) -> dict:
    """Copy run `run` into the zoo folder `dest` as `name`; returns the JSON metadata written."""
    config, model = runs.load_model(run)
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_write(dest / f"{name}.safetensors", lambda tmp: save_file(half, str(tmp)))
    reloaded = type(model)(**config.model_args)
    reloaded.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    )
    # The blend's manifest (from the cache) names the exact source files and preset.
    manifest = load_blended(
        config.preset, mirror=config.mirror, cache=config.cache, progress=False
    ).manifest
    state = runs.load_checkpoint(run).state
    metrics = state["metrics"]
    meta = {
        "name": name,
        "id": loader.model_id(reloaded).hex(),
        "model": config.model,
        "model_args": config.model_args,
        "preset": config.preset,
        "lmbda": config.lmbda,
        "command": command,
        "data": {
            "train": "blended CIFAR-10/MNIST train split, 50,000 images "
            f"(limit_train={config.limit_train})",
            **{k: manifest.get(k) for k in ("preset", "key", "pairing", "sources_sha256")},
        },
        "training": {
            k: v
            for k, v in dataclasses.asdict(config).items()
            if k in ("epochs", "batch_size", "lr", "lr_schedule", "seed")
        },
        "final_metrics": metrics[-1],
        "train_seconds": round(sum(m["seconds"] for m in metrics), 1),
        "torch": torch.__version__,
    }
    write_json(dest / f"{name}.json", meta)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run folder (config.json, model.safetensors)")
    parser.add_argument("name", help="zoo name, e.g. q1")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--dest", type=Path, default=loader.zoo_folder(), help="zoo folder")
    args = parser.parse_args()
    meta = export(args.run, args.name, args.command, args.dest)
    print(f"{args.name}: id {meta['id']}, λ={meta['lmbda']}, {meta['train_seconds']} s")


if __name__ == "__main__":
    main()
