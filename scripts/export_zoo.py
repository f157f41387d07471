"""Export a finished codec run into the shipped zoo: `python scripts/export_zoo.py RUN NAME`.

Float32 parameters are stored as float16 (half the size), buffers unchanged; loading
converts each back to the model's own dtype (and derives a hyperprior's exact decoders).
The model id is computed from that loaded model, so it matches what users get. The JSON
records the run's config, the commands that trained it (for a fine-tune, those of the run
it started from first), its last epoch's (validation) metrics, the data, and the test-set
bpp and PSNR of the real files, measured once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from blendae import codec, runs
from blendae.codec import loader
from blendae.data import STUDY, BlendedSplits, load_blended, to_pixels
from blendae.files import atomic_write, write_json


def _storage(t: torch.Tensor, parameter: bool) -> torch.Tensor:
    """Float32 parameters as float16 (half the size); buffers (integer tables, the ranges the
    exact decoders are derived from, the scale thresholds) exactly as they are."""
    t = t.detach().contiguous()
    return t.half() if parameter and t.dtype == torch.float32 else t


def lineage(run: Path) -> tuple[list[str], float]:
    """The commands that trained run `run` from scratch, in order, and their epochs' seconds:
    a run started with --init-from continues the run it names, so that run's come first."""
    if run.suffix == ".json":  # a shipped model: its JSON records its own lineage
        meta = json.loads(run.read_text(encoding="utf-8"))
        return meta["commands"], meta["train_seconds"]
    config = runs.load_config(run)
    state = runs.load_state(run)
    commands, seconds = lineage(Path(config.init_from)) if config.init_from else ([], 0.0)
    own = sum(m["seconds"] for m in state["metrics"])
    return commands + state.get("commands", []), seconds + own


def export(run: Path, name: str, command: str, dest: Path, quality: int | None = None) -> dict:
    """Copy run `run` into the zoo folder `dest` as `name`; returns the JSON metadata written.
    A variable-rate model records `quality`, the default its files are coded at."""
    config, model = runs.load_model(run)
    if getattr(model, "variable_rate", False) and quality is None:
        raise SystemExit("a variable-rate model needs --quality, its default quality")
    parameters = {name for name, _ in model.named_parameters()}
    stored = {k: _storage(v, k in parameters) for k, v in model.state_dict().items()}
    reloaded = type(model)(**config.model_args)
    reloaded.load_state_dict(stored)  # converts back to the model's dtypes
    # The blend's manifest (from the cache) names the exact source files and preset.
    splits = load_blended(config.preset, mirror=config.mirror, cache=config.cache, progress=False)
    state = runs.load_state(run)
    metrics = state["metrics"]
    commands, seconds = lineage(run)
    train_images = len(splits.train) - (config.val or 0)
    data = {
        "train": f"blended CIFAR-10/MNIST train split: the first {train_images:,} images "
        f"(limit_train={config.limit_train})",
        "validation": f"the last {config.val:,} training images" if config.val else None,
        **{k: splits.manifest.get(k) for k in ("preset", "key", "pairing", "sources_sha256")},
    }
    if config.data != STUDY:  # trained on other data: the run's own record of it
        data = {
            "train": f"--data {config.data}",
            "validation": f"{config.val:,} training images held out" if config.val else None,
            "manifest": state.get("data"),
        }
    meta = {
        "name": name,
        "id": loader.model_id(reloaded).hex(),
        "model": config.model,
        "model_args": config.model_args,
        "preset": config.preset,
        "lmbda": config.lmbda,
        # The commands that trained it, in order (the runs record each one), or as given.
        "commands": [command] if command else commands,
        "data": data,
        "training": {
            k: v
            for k, v in dataclasses.asdict(config).items()
            if k in ("epochs", "batch_size", "lr", "lr_schedule", "seed")
        },
        # The last epoch's scores; on the validation split when the run held one out.
        "last_epoch_metrics": metrics[-1],
        "train_seconds": round(seconds, 1),  # every stage's epochs (see `lineage`)
        "torch": torch.__version__,
    }
    calibration = state.get("calibration")
    if calibration:  # the ranges training chose at its end (`training.loop._calibrate`)
        meta["calibration"] = calibration
    if reloaded.patches:  # a larger image is coded as patches of the training images' side
        meta["patch"] = config.size
    if quality is not None:
        meta["quality"] = quality
    # Score the model as users get it (from a scratch copy), then publish both files.
    with tempfile.TemporaryDirectory() as scratch:
        save_file(stored, str(Path(scratch) / f"{name}.safetensors"))
        write_json(Path(scratch) / f"{name}.json", meta)
        meta["final_metrics"] = coded_test_metrics(Path(scratch) / f"{name}.json", splits)
    atomic_write(dest / f"{name}.safetensors", lambda tmp: save_file(stored, str(tmp)))
    write_json(dest / f"{name}.json", meta)
    return meta


def coded_test_metrics(
    meta_path: Path, splits: BlendedSplits, quality: int | None = None
) -> dict[str, float]:
    """bpp of the real files (header included) and PSNR of their decoding over the whole
    test set (a variable-rate model at `quality`, default its own), measured once, after
    training: what `compress --help` shows."""
    pixels = to_pixels(splits.test, splits.preset).round().clamp(0, 255).to(torch.uint8)
    images = list(pixels.permute(0, 2, 3, 1).numpy())
    files = codec.compress_batch(images, str(meta_path), quality)
    decoded = np.stack(codec.decompress_batch(files, str(meta_path))).astype(np.float64)
    mse = float(np.mean((decoded - np.stack(images)) ** 2))
    return {
        "test_images": len(images),
        "test_bpp": 8 * sum(map(len, files)) / (len(images) * images[0].shape[0] ** 2),
        "test_psnr": 10 * math.log10(255**2 / mse),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run folder (config.json, model.safetensors)")
    parser.add_argument("name", help="zoo name, e.g. q1")
    parser.add_argument(
        "--command", default="", help="the training command (default: the run's own record)"
    )
    parser.add_argument("--dest", type=Path, default=loader.zoo_folder(), help="zoo folder")
    parser.add_argument("--quality", type=int, help="a variable-rate model's default quality")
    args = parser.parse_args()
    meta = export(args.run, args.name, args.command, args.dest, args.quality)
    print(f"{args.name}: id {meta['id']}, λ={meta['lmbda']}, {meta['train_seconds']} s")


if __name__ == "__main__":
    main()
