"""Calibrate a shipped model's exact decoders on training images (`models.calibrate`):
`python scripts/calibrate_zoo.py general --keep-as general-0.7 --shipped-in 0.7-0.11`.

The calibration images are the first --count training images of each set the model trained
on (its JSON's data manifest), and of the digit sets among them inverted (an augmentation it
trained with); never validation or test images. The model keeps every weight; only its
activation ranges change, so it gets a new id and is written as a new zoo model under its
own name. The model it replaces stays in the zoo as --keep-as, so the files it wrote still
decode (a file names its model by id). This drops the model's quality scale: rerun
`scripts/measure_qualities.py --default-as-good-as q3` afterwards, which measures the scale,
the default quality and the default's test metrics anew.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from export_zoo import _storage, coded_test_metrics
from safetensors.torch import load_file, save_file

from blendae.codec import loader
from blendae.codec.zoo import training_sets
from blendae.data import load_blended, load_data, to_pixels
from blendae.files import atomic_write, write_json
from blendae.models import build_model
from blendae.models.calibrate import calibrate

INVERTED = ("mnist", "fashion-mnist")
QUALITIES = (0, 20, 40, 60, 80, 100)


def training_images(spec: str, count: int, mirror: str | None) -> torch.Tensor:
    """The first `count` training images of `spec` in [0, 1] (the unit preset's input),
    gray copied to RGB, rounded to 8-bit pixels as a user's files are."""
    data = load_data(spec, preset="unit", channels=3, mirror=mirror, progress=False)
    x = data.tensors("train", count, torch.device("cpu"))["x"]
    return to_pixels(x, data.space).round().clamp(0, 255) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a variable-rate zoo model, e.g. general")
    parser.add_argument("--keep-as", required=True, help="zoo name the uncalibrated model keeps")
    parser.add_argument(
        "--shipped-in", required=True, help="the releases that shipped it, e.g. 0.7-0.11"
    )
    parser.add_argument("--count", type=int, default=300, help="training images per set")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--mirror", help="data mirror (default: $BLENDAE_MIRROR)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zoo = loader.zoo_folder()
    src = zoo / f"{args.model}.json"
    kept = zoo / f"{args.keep_as}.json"
    if kept.exists():
        raise SystemExit(f"{kept} exists (left by an interrupted run?): remove it, or pick another")
    meta = json.loads(src.read_text(encoding="utf-8"))
    model = build_model(meta["model"], **meta["model_args"])
    model.load_state_dict(load_file(str(src.with_suffix(".safetensors"))))
    specs = training_sets(meta)
    if not specs:
        raise SystemExit(f"{src} records no training sets to calibrate on")
    sets = {spec: training_images(spec, args.count, args.mirror) for spec in specs}
    sets.update({f"{s} inverted": 1 - sets[s] for s in INVERTED if s in sets})
    start = time.perf_counter()
    cases = [(x, quality) for x in sets.values() for quality in QUALITIES]
    result = calibrate(model.eval(), cases, log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    print(
        f"mean log2 bits {result.bits_before:.4f} -> {result.bits_after:.4f}, "
        f"mean PSNR {result.psnr_before:.3f} -> {result.psnr_after:.3f} dB ({seconds:.0f} s)"
    )
    parameters = {name for name, _ in model.named_parameters()}
    stored = {k: _storage(v, k in parameters) for k, v in model.state_dict().items()}
    reloaded = build_model(meta["model"], **meta["model_args"])
    reloaded.load_state_dict(stored)
    calibrated = {
        **meta,
        "id": loader.model_id(reloaded).hex(),
        "commands": [
            *meta["commands"],
            f"python scripts/calibrate_zoo.py {args.model} --keep-as {args.keep_as} "
            f"--count {args.count}",
        ],
        "calibration": {
            "from": meta["id"],
            "images": f"the first {args.count} training images of {', '.join(sets)}",
            "qualities": list(QUALITIES),
            "ranges_before": result.ranges_before,
            "ranges": result.ranges,
            "mean_log2_bits": [round(result.bits_before, 5), round(result.bits_after, 5)],
            "mean_psnr": [round(result.psnr_before, 4), round(result.psnr_after, 4)],
            "seconds": round(seconds, 1),
        },
    }
    calibrated.pop("qualities", None)  # measured anew by scripts/measure_qualities.py
    calibrated.pop("qualities_images", None)
    splits = load_blended(meta["preset"], mirror=args.mirror, progress=False)
    with tempfile.TemporaryDirectory() as scratch:
        save_file(stored, str(Path(scratch) / f"{args.model}.safetensors"))
        write_json(Path(scratch) / f"{args.model}.json", calibrated)
        calibrated["final_metrics"] = coded_test_metrics(
            Path(scratch) / f"{args.model}.json", splits
        )
    # the uncalibrated model under its new name first, then the calibrated one in its place
    atomic_write(
        kept.with_suffix(".safetensors"),
        lambda tmp: shutil.copyfile(src.with_suffix(".safetensors"), tmp),
    )
    write_json(
        kept,
        {**meta, "name": args.keep_as, "superseded_by": args.model, "shipped_in": args.shipped_in},
    )
    atomic_write(src.with_suffix(".safetensors"), lambda tmp: save_file(stored, str(tmp)))
    write_json(src, calibrated)
    print(f"{args.model}: id {calibrated['id']} (was {meta['id']}, kept as {args.keep_as})")


if __name__ == "__main__":
    main()
