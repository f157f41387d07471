"""Folder data at scale: building the uint8 cache of `folder:PATH`, and training from it.

Two synthetic folders are generated once under --workdir and reused: 200,000 random 32×32
PNGs (1,000 per subfolder) and 2,000 smooth random 2048×1536 JPEGs (≈19 GB as raw pixels).
Each cache is built cold in a fresh interpreter that imports only `blendae.data.folder`,
which reports files/s and its peak resident memory (beside that of importing alone, which
includes torch: `blendae.data` imports it); a second load (warm: walk + manifest check) is
timed too. Then the default `conv` model trains with blendae's `train_step`,
batch 32, from (a) in-memory float tensors (indexed by a shuffled permutation, as the
loop does) and (b) random crops of the folder caches (`ImageStore.crops`, then to float
and normalized by the train statistics), taking turns every 5 steps, `--rounds` rounds of
`--steps` steps each, images/s from median step times, then medians over rounds.
The last two lines are `folder-train-ratio R` (the smaller of the two folders' median
ratios (b)/(a)) and `folder-cache-rss-gb G` (peak RSS of building the 200,000-image cache).

    python -m benchmarks.data_scale            # generation ~10 min once, then ~10 min
    python -m benchmarks.data_scale --quick    # 20,000 small + 100 large images
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import torch

from benchmarks.common import header
from blendae.config import RunConfig
from blendae.data.cache import ImageStore
from blendae.data.folder import load_folder
from blendae.models import DEFAULT_MODEL, build_model
from blendae.training.loop import make_optimizer, train_step, use_bf16
from blendae.training.losses import objective_for

PER_FOLDER = 1_000  # files per subfolder of the generated trees
LARGE = (1536, 2048)  # height, width
BATCH = RunConfig().batch_size  # 32, the loop's default


def _write_small(job: tuple[Path, int, int]) -> None:
    """Random 32×32 RGB PNGs `start`.. in `folder` (fast: compress_level 1)."""
    from PIL import Image

    folder, start, count = job
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(pixels[i]).save(folder / f"{start + i:07d}.png", compress_level=1)


def _write_large(job: tuple[Path, int, int]) -> None:
    """Smooth random 2048×1536 JPEGs: random 12×16 colors, bicubically enlarged."""
    from PIL import Image

    folder, start, count = job
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        image = small.resize(LARGE[::-1], Image.Resampling.BICUBIC)
        image.save(folder / f"{start + i:06d}.jpg", quality=90)


def make_folder(path: Path, n: int, write: Callable[[tuple[Path, int, int]], None]) -> float:
    """Generate `n` images under `path` unless a finished copy is there; seconds spent."""
    done = path / ".complete"  # not an image: the cache ignores it
    if done.exists():
        return 0.0
    shutil.rmtree(path, ignore_errors=True)
    jobs = [
        (path / f"d{s // PER_FOLDER:04d}", s, min(PER_FOLDER, n - s))
        for s in range(0, n, PER_FOLDER)
    ]
    if write is _write_large:  # JPEGs are big: smaller jobs balance the pool
        jobs = [(f, s + k, min(50, c - k)) for f, s, c in jobs for k in range(0, c, 50)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(os.cpu_count()) as pool:
        pool.map(write, jobs, chunksize=1)
    done.write_text(f"{n}\n")
    return time.perf_counter() - t0


# Run in a fresh interpreter that imports only the folder module (and what it imports),
# so its peak RSS is the build's own, not this benchmark's torch models and tensors.
_CHILD = """
import json, resource, sys, time
from blendae.data.folder import load_folder
t0 = time.perf_counter()
images = None if sys.argv[1] == "-" else load_folder(sys.argv[1], cache=sys.argv[2], progress=False)
seconds = time.perf_counter() - t0
usable = images and sum(len(images.split(s)) for s in ("train", "val", "test"))
try:  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec)
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps([seconds, usable, peak_kb]))
"""


def _child(*argv: str) -> tuple[float, int, float]:
    """Seconds, usable images and peak RSS in GB (10^9 bytes) of `_CHILD` run on `argv`."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, check=True
    )
    seconds, usable, rss_kb = json.loads(done.stdout.splitlines()[-1])
    return seconds, usable, rss_kb * 1024 / 1e9


def build_cache(folder: Path, cache: Path) -> tuple[float, int, float]:
    """Remove `cache`, then build it cold in a fresh process: seconds, images, peak RSS."""
    shutil.rmtree(cache, ignore_errors=True)
    return _child(str(folder), str(cache))


def trainer(next_batch: Callable[[], torch.Tensor]) -> Callable[[int], list[float]]:
    """run(steps) -> seconds of each `train_step` (batch included) on the default model."""
    config = RunConfig()
    model = build_model(DEFAULT_MODEL).to(memory_format=torch.channels_last)
    amp = use_bf16(config, model, torch.device("cpu"))
    objective = objective_for(model, DEFAULT_MODEL, None, config.preset)
    optimizer = make_optimizer(model, config.lr, torch.device("cpu"))

    def run(steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            train_step(
                model, optimizer, {"x": next_batch()}, objective,
                amp=amp, memory_format=torch.channels_last,
            )  # fmt: skip
            times.append(time.perf_counter() - t0)
        return times

    return run


def step_rates(
    runners: dict[str, Callable[[int], list[float]]], steps: int, rounds: int, block: int = 5
) -> dict[str, list[float]]:
    """Per round, each runner's images/s at its median step time. The runners take turns
    every `block` steps, so load from other processes hits all alike; on a shared machine
    whole-run times drift by 2x and more, median step times far less."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(0, steps, block):
            for name, run in runners.items():
                times[name] += run(block)
        for name, values in times.items():
            rates[name].append(BATCH / median(values))
    return rates


def shuffled(n: int, batch: int, permutation: Callable[[int], Any]) -> Iterator[Any]:
    """Index batches over a fresh permutation of range(n) each epoch (the loop's way)."""
    while True:
        perm = permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield perm[start : start + batch]


def memory_batches(x: torch.Tensor, batch: int) -> Callable[[], torch.Tensor]:
    """Batches of an in-memory float tensor, indexed by a shuffled permutation."""
    batches = shuffled(len(x), batch, torch.randperm)
    return lambda: x[next(batches)]


def folder_batches(store: ImageStore, batch: int, seed: int) -> Callable[[], torch.Tensor]:
    """Random crops of a folder split, to float and normalized by the train statistics."""
    rng = np.random.default_rng(seed)
    mean, std = (255 * torch.tensor(v).view(1, -1, 1, 1) for v in store.mean_std)  # pixels
    batches = shuffled(len(store), batch, rng.permutation)

    def next_batch() -> torch.Tensor:
        u8 = torch.from_numpy(store.crops(next(batches), 32, rng))  # (B, C, 32, 32)
        return u8.float().sub_(mean).div_(std)

    return next_batch


def data_us(next_batch: Callable[[], torch.Tensor], seconds: float = 1.0) -> float:
    """Microseconds to produce one batch, alone: the data's share of a training step."""
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next_batch()
        calls += 1
    return (time.perf_counter() - t0) / calls * 1e6


def in_memory(store: ImageStore, limit: int) -> torch.Tensor:
    """The first `limit` images of a split as normalized float tensors (center crops)."""
    n = min(limit, len(store))
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in store.mean_std)
    x = torch.empty((n, store.channels, 32, 32), dtype=torch.float32)
    for s in range(0, n, 5_000):
        u8 = torch.from_numpy(store.crops(np.arange(s, min(s + 5_000, n)), 32, None))
        x[s : s + len(u8)] = (u8.float() / 255 - mean) / std
    return x


def _du_gb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 small + 100 large images")
    parser.add_argument("--workdir", type=Path, help="where the folders and caches go")
    parser.add_argument("--steps", type=int, help="training steps per run (default 300)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default: 3 quick, 5 full)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = {"small": 20_000, "large": 100} if args.quick else {"small": 200_000, "large": 2_000}
    steps, rounds = args.steps or 300, args.rounds or (3 if args.quick else 5)
    workdir = args.workdir or Path(tempfile.gettempdir()) / "blendae-data-scale"

    print(header("folder data at scale: cache build, and training from it vs from memory"))
    folders = {name: workdir / f"{name}-{n}" for name, n in counts.items()}
    caches = {name: workdir / f"cache-{name}-{n}" for name, n in counts.items()}
    rss = build_all(counts, folders, caches)
    stores = {
        name: load_folder(folders[name], cache=caches[name], progress=False).split("train")
        for name in counts
    }
    ratio = train_all(stores, steps, rounds)
    print(f"folder-train-ratio {ratio:.2f}")
    print(f"folder-cache-rss-gb {rss:.2f}")


def build_all(counts: dict[str, int], folders: dict[str, Path], caches: dict[str, Path]) -> float:
    """Generate (or reuse) each folder and build its cache cold; the small one's peak RSS."""
    writers = {"small": _write_small, "large": _write_large}
    imports_gb = _child("-", "-")[2]
    print(f"a process that only imports blendae.data.folder: peak RSS {imports_gb:.2f} GB")
    rss: dict[str, float] = {}
    for name, n in counts.items():
        made = make_folder(folders[name], n, writers[name])
        origin = f"generated in {made:.0f} s" if made else "reused"
        seconds, usable, rss[name] = build_cache(folders[name], caches[name])
        t0 = time.perf_counter()
        load_folder(folders[name], cache=caches[name], progress=False)
        warm = time.perf_counter() - t0
        print(
            f"{name}: {n:,} files ({origin}), {usable:,} usable; cold cache build "
            f"{seconds:.1f} s = {n / seconds:,.0f} files/s, peak RSS {rss[name]:.2f} GB, "
            f"cache {_du_gb(caches[name]):.2f} GB; warm load {warm:.2f} s"
        )
    return rss["small"]


def train_all(stores: dict[str, ImageStore], steps: int, rounds: int) -> float:
    """Train from memory and from each store in turn; the smaller median ratio folder/memory."""
    x = in_memory(stores["small"], 50_000)
    batches = {
        "(a) in-memory tensors": memory_batches(x, BATCH),
        **{f"(b) folder {name}": folder_batches(st, BATCH, 1) for name, st in stores.items()},
    }
    print(
        f"training: model {DEFAULT_MODEL}, batch {BATCH}, train_step; (a) {tuple(x.shape)} "
        f"float32 in memory, (b) random crops; {rounds} rounds of {steps} steps per run, "
        "runs taking turns every 5 steps; medians of step times, then over rounds"
    )
    runners = {name: trainer(next_batch) for name, next_batch in batches.items()}
    for run in runners.values():
        run(3)  # warm-up: oneDNN picks and caches kernels for these shapes
    rates = step_rates(runners, steps, rounds)
    base = rates["(a) in-memory tensors"]
    ratios = []
    for name, values in rates.items():
        per_round = [b / a for a, b in zip(base, values, strict=True)]
        ratios.append(median(per_round))
        print(
            f"{name:24s} {median(values):6.0f} img/s, batch alone {data_us(batches[name]):5.0f} "
            "µs; ratio to (a) per round " + ", ".join(f"{r:.2f}" for r in per_round)
        )
    return min(ratios[1:])


if __name__ == "__main__":
    main()
