"""Decode anywhere (issue #21): start-up and throughput of the torch-free decoder.

Prints, all measured in this run:
- the median wall time of `blendae decompress one.bae -o out.png` (a subprocess) and of
  `python -c "import numpy, PIL.Image"`, and their ratio `startup-ratio R` (floor: ≤ 3.0);
- decoding throughput of the torch decoder and the torch-free one on 1,000 32×32 files of
  the default model (models loaded; glibc set as the command line sets it), their ratio,
  and from how many files torch's start-up pays off;
- with `--identity`: for every shipped and baseline model, how many of 1,000 test blends
  decode to different pixels by the two decoders (real blends when $BLENDAE_MIRROR is set);
- last, `browser-decode-img-s N` from `benchmarks.browser_decode.measure` (headless
  Chromium), or `n/a` when that module is missing.

    python -m benchmarks.decode_anywhere [--runs 7] [--files 1000] [--identity]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import blendae
from benchmarks.common import header
from blendae.allocator import keep_freed_memory
from blendae.codec import container, decode, images, zoo
from blendae.codec.files import TORCH_FROM
from blendae.codec.zoo import DEFAULT

SRC = str(Path(blendae.__file__).parents[1])
STARTUP_FLOOR = 3.0


def blends(count: int) -> list[np.ndarray]:
    """The first `count` blended test images (unit preset) with the real mirror, else
    CIFAR-like synthetic ones (smooth colour fields with noise)."""
    if os.environ.get("BLENDAE_MIRROR"):
        from blendae.data import load_blended, to_pixels

        test = load_blended("unit", progress=False).test[:count]
        pixels = to_pixels(test, "unit").round().clamp(0, 255).byte()
        return list(pixels.permute(0, 2, 3, 1).numpy())
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (count, 9, 9, 3)).astype(np.float32)
    big = np.kron(small, np.ones((1, 4, 4, 1)))[:, :32, :32] + rng.normal(0, 8, (count, 32, 32, 3))
    return list(np.clip(big, 0, 255).astype(np.uint8))


def median_seconds(command: list[str], runs: int) -> float:
    """The median wall time of `runs` runs, after one warm-up run. Byte code is cached, as
    in an installed package (PYTHONDONTWRITEBYTECODE would recompile blendae every run)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = SRC
    subprocess.run(command, env=env, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(folder: Path, runs: int) -> float:
    """Prints the start-up numbers; returns the time `import torch` takes."""
    one = folder / "one.bae"
    one.write_bytes(images.compress_batch(blends(1), None)[0])
    out = folder / "one.png"
    decompress = [sys.executable, "-m", "blendae", "decompress", str(one), "-o", str(out), "-f"]
    t_cli = median_seconds(decompress, runs)
    t_base = median_seconds([sys.executable, "-c", "import numpy, PIL.Image"], runs)
    t_torch = median_seconds([sys.executable, "-c", "import torch"], runs)
    print(f"blendae decompress one.bae: {t_cli:.3f} s (median of {runs})")
    print(f"python -c 'import numpy, PIL.Image': {t_base:.3f} s; 'import torch': {t_torch:.3f} s")
    ratio = t_cli / t_base
    verdict = "ok" if ratio <= STARTUP_FLOOR else f"ABOVE the floor {STARTUP_FLOOR}"
    print(f"startup-ratio {ratio:.2f} ({verdict})")
    return t_torch


def rate(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def throughput(count: int, torch_import: float) -> None:
    """Both decoders on `count` files, models loaded; and from how many files on torch's
    faster decoding pays for importing it (`codec.files.TORCH_FROM` should be near)."""
    parsed = [container.unpack(d) for d in images.compress_batch(blends(count), None)]
    images.decompress_parsed(parsed[:8], None)  # load both decoders first
    decode.decode_parsed(parsed[:8])
    by_torch = rate(lambda: images.decompress_parsed(parsed, None), count)
    here = rate(lambda: decode.decode_parsed(parsed), count)
    print(
        f"throughput, {count} 32x32 files ({DEFAULT}, models loaded, as the CLI runs: "
        f"keep_freed_memory): torch {by_torch:.0f} img/s, "
        f"torch-free {here:.0f} img/s, ratio torch-free/torch {here / by_torch:.2f}"
    )
    saved = 1 / here - 1 / by_torch  # seconds per file
    pays = f"from ~{torch_import / saved:.0f} files" if saved > 0 else "never (slower here)"
    print(f"torch's start-up ({torch_import:.2f} s) pays off {pays}; TORCH_FROM = {TORCH_FROM}")


def identity(count: int) -> None:
    """Decode 1,000 blends by both decoders, for every model on disk."""
    root = Path(__file__).parents[1]
    models = [zoo.zoo_folder() / f"{name}.json" for name in zoo.zoo_entries()] + sorted(
        root.glob("benchmarks/baseline/*/q*.json")
    )
    pictures = blends(count)
    for meta in models:
        parsed = [container.unpack(d) for d in images.compress_batch(pictures, str(meta))]
        a = images.decompress_parsed(parsed, str(meta))
        b = decode.decode_parsed(parsed, str(meta))
        files = sum(x.tobytes() != y.tobytes() for x, y in zip(a, b, strict=True))
        values = sum(int((x != y).sum()) for x, y in zip(a, b, strict=True))
        exact = "exact" if decode.load_decoder(str(meta)).exact else "float"
        name = f"{meta.parent.name}/{meta.stem}"
        print(f"identity {name} ({exact}): {files} of {count} files, {values} values differ")


def browser_line(folder: Path) -> str:
    """`browser-decode-img-s N` from the browser decoder's benchmark, if it exists."""
    try:
        from benchmarks.browser_decode import measure  # another engineer's module
    except ImportError:
        return "browser-decode-img-s n/a (benchmarks/browser_decode.py missing)"
    paths = []
    for i, data in enumerate(images.compress_batch(blends(100), None)):
        paths.append(folder / f"b{i:03d}.bae")
        paths[-1].write_bytes(data)
    return f"browser-decode-img-s {measure(paths):.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="subprocess runs per median")
    parser.add_argument("--files", type=int, default=1000, help="files for the throughput")
    parser.add_argument("--identity", action="store_true", help="check every model, 1,000 blends")
    args = parser.parse_args(argv)
    print(header("decode anywhere: start-up and throughput of the torch-free decoder"))
    keep_freed_memory()  # as `blendae decompress` does before decoding
    with tempfile.TemporaryDirectory() as tmp:
        torch_import = startup(Path(tmp), args.runs)
        throughput(args.files, torch_import)
        if args.identity:
            identity(args.files)
        print(browser_line(Path(tmp)))


if __name__ == "__main__":
    main()
