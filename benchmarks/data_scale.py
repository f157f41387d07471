"""Folder data at scale: building the uint8 cache of `folder:PATH`, and training from it.

Two synthetic folders are generated once under --workdir and reused: 200,000 random 32×32
PNGs (1,000 per subfolder) and 2,000 smooth random 2048×1536 JPEGs (≈19 GB as raw pixels).
Each cache is built cold in a fresh interpreter that imports only `blendae.data.folder`,
which reports files/s and its peak resident memory (beside that of importing alone, which
includes torch: `blendae.data` imports it); a second load (warm: walk + manifest check) is
timed too. Then the default `conv` model trains with blendae's `train_step`,
batch 32, from (a) in-memory float tensors (indexed by a shuffled permutation, as the
loop does) and (b) random crops of the folder caches (`ImageStore.crops`, then to float
and normalized by the train statistics), interleaved rounds of `--steps` steps, medians.
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

from benchmarks.common import header, interleaved
from blendae.config import RunConfig
from blendae.data.cache import ImageStore
from blendae.data.folder import load_folder
from blendae.models import DEFAULT_MODEL, build_model
from blendae.training.loop import make_optimizer, train_step, use_bf16
from blendae.training.losses import objective_for

PER_FOLDER = 1_000  # files per subfolder of the generated trees
LARGE = (1536, 2048)  # height, width


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
print(json.dumps([seconds, usable, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))
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


def trainer(next_batch: Callable[[], torch.Tensor]) -> Callable[[int], float]:
    """run(steps) -> images/s of `train_step` on the default model, batches from `next_batch`."""
    config = RunConfig()
    model = build_model(DEFAULT_MODEL).to(memory_format=torch.channels_last)
    amp = use_bf16(config, model, torch.device("cpu"))
    objective = objective_for(model, DEFAULT_MODEL, None, config.preset)
    optimizer = make_optimizer(model, config.lr, torch.device("cpu"))

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(
                model, optimizer, {"x": next_batch()}, objective,
                amp=amp, memory_format=torch.channels_last,
            )  # fmt: skip
        return steps * config.batch_size / (time.perf_counter() - t0)

    return run


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
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in store.mean_std)
    batches = shuffled(len(store), batch, rng.permutation)

    def next_batch() -> torch.Tensor:
        u8 = torch.from_numpy(store.crops(next(batches), 32, rng))  # (B, C, 32, 32)
        return (u8.float().div_(255) - mean) / std

    return next_batch


def crops_us(store: ImageStore, seconds: float = 1.0) -> float:
    """Microseconds per batch of 32 random crops (the data's share of a training step)."""
    rng = np.random.default_rng(0)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        store.crops(rng.integers(0, len(store), 32), 32, rng)
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
    writers = {"small": _write_small, "large": _write_large}
    folders = {name: workdir / f"{name}-{n}" for name, n in counts.items()}
    rss: dict[str, float] = {}
    imports_gb = _child("-", "-")[2]
    print(f"a process that only imports blendae.data.folder: peak RSS {imports_gb:.2f} GB")
    for name, n in counts.items():
        made = make_folder(folders[name], n, writers[name])
        origin = f"generated in {made:.0f} s" if made else "reused"
        cache = workdir / f"cache-{name}-{n}"
        seconds, usable, rss[name] = build_cache(folders[name], cache)
        t0 = time.perf_counter()
        load_folder(folders[name], cache=cache, progress=False)
        warm = time.perf_counter() - t0
        print(
            f"{name}: {n:,} files ({origin}), "
            f"{usable:,} usable; cold cache build {seconds:.1f} s = {n / seconds:,.0f} files/s, "
            f"peak RSS {rss[name]:.2f} GB, cache {_du_gb(cache):.2f} GB; warm load {warm:.2f} s"
        )

    stores = {
        name: load_folder(folders[name], cache=workdir / f"cache-{name}-{n}", progress=False).split(
            "train"
        )
        for name, n in counts.items()
    }
    for name, store in stores.items():
        print(f"crops from the {name} cache: {crops_us(store):.0f} µs per batch of 32")
    x = in_memory(stores["small"], 50_000)
    print(
        f"training: model {DEFAULT_MODEL}, batch 32, train_step, {rounds} rounds of {steps} "
        f"steps per run, interleaved; (a) {tuple(x.shape)} float32 in memory"
    )
    runners = {
        "(a) in-memory tensors": trainer(memory_batches(x, 32)),
        **{f"(b) folder {name}": trainer(folder_batches(s, 32, 1)) for name, s in stores.items()},
    }
    for run in runners.values():
        run(3)  # warm-up: oneDNN picks and caches kernels for these shapes
    rates = interleaved({k: (lambda r=r: r(steps)) for k, r in runners.items()}, rounds)
    base = rates.pop("(a) in-memory tensors")
    print(f"{'(a) in-memory tensors':24s} median {median(base):7.0f} img/s")
    ratios = []
    for name, values in rates.items():
        per_round = [b / a for a, b in zip(base, values, strict=True)]
        ratios.append(median(per_round))
        print(
            f"{name:24s} median {median(values):7.0f} img/s; ratio per round "
            + ", ".join(f"{r:.2f}" for r in per_round)
        )
    print(f"folder-train-ratio {min(ratios):.2f}")
    print(f"folder-cache-rss-gb {rss['small']:.2f}")


if __name__ == "__main__":
    main()
