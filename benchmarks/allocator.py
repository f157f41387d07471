"""The codec with `blendae.allocator.keep_freed_memory` against glibc's default thresholds.

Codes the first N study test blends in subprocesses of this tree that alternate between
calling `keep_freed_memory` first (as the command line does) and not; prints each side's
median images/s and page faults per pass over all N images, their ratio, and whether both
wrote the same files and decoded the same pixels (they must: only memory reuse changes).

    python -m benchmarks.allocator [--rounds 5] [--limit 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import header, interleaved
from benchmarks.rd import test_images
from benchmarks.speed_against import ROOT, arguments, report, run
from blendae.data import STUDY


def main() -> None:
    args = arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    print(header("keep_freed_memory against glibc's default thresholds"))
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images.npy"
        np.save(images, test_images(STUDY, args.limit, args.mirror))
        coding = (ROOT / "src", images, args.model, args.quality, args.threads)
        sides = {
            "keep_freed_memory": partial(run, *coding, keep=True),
            "glibc defaults": partial(run, *coding, keep=False),
        }
        report(interleaved(sides, args.rounds, alternate=True))


if __name__ == "__main__":
    main()
