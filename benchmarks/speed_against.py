"""The codec's speed against an earlier commit's, side by side in one run.

Codes the first N study test blends with one model in subprocesses that alternate between
this tree's `src/` and REV's (extracted from git into a temporary folder), each timing
`compress_batch` and `decompress_batch` over all N images (the faster of two passes);
prints each side's median images/s, their ratio, and whether both wrote the same files and
decoded the same pixels. Alternating rounds (each pair in the other order than the last)
put this machine's drifting load on both sides alike. `--rev-model` times another model on
REV's side (an earlier default: 0.5.0's speed floors were measured with its zoo), and
`--as-the-cli` runs this tree's side as its command line runs.

    python -m benchmarks.speed_against REV [--rounds 5] [--limit 1000] [--threads 2]
    python -m benchmarks.speed_against 90afda1 --rev-model q3 --as-the-cli
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import header, interleaved
from benchmarks.rd import test_images
from blendae.data import STUDY

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import hashlib, json, resource, sys, time
import numpy as np
import torch
images_path, model, quality, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if sys.argv[5] == "keep":
    from blendae.allocator import keep_freed_memory
    assert keep_freed_memory(), "glibc refused the thresholds"
from blendae.codec import images as api
torch.set_num_threads(threads)
coding = {} if quality == "none" else {"quality": int(quality)}  # 0.5 took no quality
images = list(np.load(images_path))
api.decompress_batch(api.compress_batch(images[:8], model, **coding), model)  # warm up
rates = {"encode": 0.0, "decode": 0.0}
faults = {"encode faults": [], "decode faults": []}
def faulted():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # the faster of two passes: a burst of load on this machine hits one
    f0, t0 = faulted(), time.perf_counter()
    files = api.compress_batch(images, model, **coding)
    f1, t1 = faulted(), time.perf_counter()
    decoded = api.decompress_batch(files, model)
    f2, t2 = faulted(), time.perf_counter()
    rates["encode"] = max(rates["encode"], len(images) / (t1 - t0))
    rates["decode"] = max(rates["decode"], len(images) / (t2 - t1))
    faults["encode faults"].append(f1 - f0)
    faults["decode faults"].append(f2 - f1)
print(json.dumps({
    **rates,
    **{k: min(v) for k, v in faults.items()},
    "files": hashlib.sha256(b"".join(files)).hexdigest(),
    "pixels": hashlib.sha256(b"".join(d.tobytes() for d in decoded)).hexdigest(),
}))
"""


def extract(rev: str, folder: Path) -> Path:
    """REV's `src/` under `folder` (git archive, extracted with tarfile's data filter)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def run(
    src: Path, images: Path, model: str, quality: str, threads: int, keep: bool = False
) -> dict:
    """One child's rates, page faults (the fewer of its two passes) and hashes; `keep`:
    it first calls `keep_freed_memory` (a tree that has `blendae.allocator`)."""
    allocator = "keep" if keep else "default"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(images), model, quality, str(threads), allocator],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise SystemExit(f"coding with {src} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(runs: dict[str, list[dict]]) -> None:
    """Each side's median rates and page faults, the first side's ratio to the second's,
    and whether every run wrote the same files and decoded the same pixels."""
    medians = {}
    for name, results in runs.items():
        medians[name] = {
            k: statistics.median(r[k] for r in results)
            for k in ("encode", "decode", "encode faults", "decode faults")
        }
        m, decodes = medians[name], ", ".join(f"{r['decode']:.0f}" for r in results)
        print(
            f"{name}: encode {m['encode']:.0f} img/s, decode {m['decode']:.0f} img/s (medians "
            f"of {len(results)}; decode per round {decodes}); page faults per pass: encode "
            f"{m['encode faults']:.0f}, decode {m['decode faults']:.0f}"
        )
    ours, theirs = medians.values()
    same = {
        k: len({r[k] for results in runs.values() for r in results}) == 1
        for k in ("files", "pixels")
    }
    print(
        f"ratio: encode {ours['encode'] / theirs['encode']:.2f}x, decode "
        f"{ours['decode'] / theirs['decode']:.2f}x; same files: {same['files']}, same pixels: "
        f"{same['pixels']}"
    )


def arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The options every side-by-side speed benchmark takes."""
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--limit", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--model", default="general", help="a shipped model (default general)")
    parser.add_argument("--quality", default="none", help="0..100 (default: the model's)")
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    return parser.parse_args()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="the commit (or tag) to time against")
    parser.add_argument(
        "--rev-model",
        default=None,
        help="REV's model, at its own rate (default: --model, at --quality)",
    )
    parser.add_argument(
        "--as-the-cli",
        action="store_true",
        help="this tree's side first calls blendae.allocator.keep_freed_memory, as its "
        "command line does (REV's side runs as REV's did)",
    )
    args = arguments(parser)
    print(header(f"codec speed against {args.rev}"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = folder / "images.npy"
        np.save(images, test_images(STUDY, args.limit, args.mirror))
        ours = (ROOT / "src", images, args.model, args.quality, args.threads, args.as_the_cli)
        rev_model = (args.rev_model, "none") if args.rev_model else (args.model, args.quality)
        theirs = (extract(args.rev, folder / "rev"), images, *rev_model, args.threads)
        sides = {f"this tree ({args.model})": ours, f"{args.rev} ({rev_model[0]})": theirs}
        runs = {name: partial(run, *side) for name, side in sides.items()}
        report(interleaved(runs, args.rounds, alternate=True))


if __name__ == "__main__":
    main()
