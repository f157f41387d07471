"""Every test set of `benchmarks.rd --all-sets` through the command line: a handful of each
set's real test images compressed and decompressed by `blendae`, scored as the benchmark
scores the API path (the same pixels, so the same PSNR)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from benchmarks import rd
from PIL import Image

from blendae import codec as api
from conftest import blendae


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255**2 / float(np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.mark.mirror
@pytest.mark.parametrize("name", rd.ALL_SETS)
def test_each_set_through_the_cli_scores_as_the_benchmark_path(name: str, tmp_path: Path) -> None:
    images = rd.set_images(name, 6, os.environ["BLENDAE_MIRROR"])
    src = tmp_path / "src"
    src.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(src / f"{i}.png")
    for quality in (None, 30):
        option = [] if quality is None else ["--quality", str(quality)]
        out, back_dir = tmp_path / f"bae-{quality}", tmp_path / f"back-{quality}"
        rc, _, err = blendae("compress", src, "-o", out, *option)
        assert rc == 0, err
        rc, _, err = blendae("decompress", out, "-o", back_dir)
        assert rc == 0, err
        back = np.stack([np.asarray(Image.open(back_dir / f"{i}.png")) for i in range(6)])
        files = api.compress_batch(list(images), quality=quality)
        bench = np.stack(api.decompress_batch(files))
        assert [(out / f"{i}.bae").stat().st_size for i in range(6)] == [len(f) for f in files]
        assert abs(psnr(images, back) - psnr(images, bench)) <= 0.1
        # the default quality is about as good as 0.5's q3; 30 is lower, and still an image
        assert psnr(images, back) > (30 if quality is None else 25)
