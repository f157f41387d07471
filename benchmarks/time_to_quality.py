"""Time to quality: wall seconds until a run first reaches a target, on the full real data.

(a) the study's `seed-fullbatch` protocol and (b) blendae's default protocol (shuffled
mini-batches of 32), both with the `seed` model in the study's space (preset `seed`),
until the test loss falls to the study's final value 0.2609; then (c) the default model
on the `unit` preset until 30 dB test PSNR. Each run is the real `blendae train` loop
(its per-epoch evaluation and checkpoints included); its `stop` hook evaluates the whole
test set every `check` optimizer steps and ends the run when the target is reached.
The time those checks take is measured and subtracted, so the result is the loop's own
wall time from the call to `train` (data loading included) to the step that reached it.

    python -m benchmarks.time_to_quality                 # all three
    python -m benchmarks.time_to_quality --only b c      # a subset
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import header
from blendae.config import RunConfig
from blendae.data import load_blended, to_pixels
from blendae.evaluation.metrics import evaluate
from blendae.models import DEFAULT_MODEL
from blendae.training.loop import train

STUDY_TEST_LOSS = 0.2609  # the study's final test loss (epoch 50, seed-fullbatch)
TARGET_PSNR = 30.0


@dataclass(frozen=True)
class Target:
    name: str
    config: RunConfig
    metric: str  # "test_loss" (reach at or below) or "test_psnr" (at or above)
    value: float
    check: int  # evaluate every this many optimizer steps

    def reached(self, result: dict[str, float]) -> bool:
        if self.metric == "test_loss":
            return result["test_loss"] <= self.value
        return result[self.metric] >= self.value


def targets(max_epochs: int) -> dict[str, Target]:
    loss, psnr = ("test_loss", STUDY_TEST_LOSS), ("test_psnr", TARGET_PSNR)
    return {
        "a": Target(
            "(a) seed, seed-fullbatch, preset seed",
            RunConfig(model="seed", preset="seed", protocol="seed-fullbatch", epochs=max_epochs),
            *loss,
            check=1,
        ),
        "b": Target(
            "(b) seed, minibatch (default), preset seed",
            RunConfig(model="seed", preset="seed", epochs=max_epochs),
            *loss,
            check=25,
        ),
        "c": Target(
            f"(c) {DEFAULT_MODEL} (default model), minibatch, preset unit",
            RunConfig(model=DEFAULT_MODEL, preset="unit", epochs=max_epochs),
            *psnr,
            check=250,
        ),
    }


@dataclass
class Reached:
    seconds: float | None  # loop wall time to the target, checks excluded
    step: int
    result: dict[str, float]


def time_to_target(target: Target, workdir: Path) -> Reached:
    """Run `train` with a stop hook that checks the target every `target.check` steps."""
    config = target.config
    run_dir = workdir / target.name.split()[0].strip("()")
    splits = load_blended(config.preset, mirror=config.mirror, cache=config.cache)
    x_test = splits.test
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    outcome = Reached(None, 0, {})
    checking = 0.0  # seconds spent inside the hook's evaluations
    t0 = time.perf_counter()

    def stop(model: nn.Module, step: int) -> bool:
        nonlocal checking
        if step % target.check:
            return False
        c0 = time.perf_counter()
        model.eval()
        result = evaluate(
            lambda x: model(x.contiguous(memory_format=memory_format)),
            x_test,
            lambda x: to_pixels(x, config.preset),
        )
        model.train()
        outcome.step, outcome.result = step, result
        if target.reached(result):
            outcome.seconds = c0 - t0 - checking  # the loop's time up to this step
            return True
        checking += time.perf_counter() - c0
        return False

    train(config, run_dir, splits, progress=False, stop=stop)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    parser.add_argument("--max-epochs", type=int, default=60, help="give up after this many")
    parser.add_argument(
        "--keep", type=Path, help="keep the run folders (metrics.jsonl per epoch) under this folder"
    )
    args = parser.parse_args()

    print(header("time to quality on the full real data (50,000 train, 10,000 test)"))
    results: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="blendae-ttq-") as tmp:
        workdir = args.keep or Path(tmp)
        for key, target in targets(args.max_epochs).items():
            if key not in args.only:
                continue
            reached = time_to_target(target, workdir)
            results[key] = reached.seconds
            sign = "<=" if target.metric == "test_loss" else ">="
            goal = f"{target.metric} {sign} {target.value}"
            when = f"{reached.seconds:8.1f} s" if reached.seconds is not None else "not reached"
            r = reached.result
            print(
                f"{target.name:48s} {goal:18s} {when} at step {reached.step} "
                f"(checked every {target.check}; test loss {r['test_loss']:.4f}, "
                f"PSNR {r['test_psnr']:.2f} dB)",
                flush=True,
            )
    a, b = results.get("a"), results.get("b")
    if a is not None and b is not None:
        print(f"ratio a/b {a / b:.1f}")


if __name__ == "__main__":
    main()
