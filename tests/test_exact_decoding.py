"""Every shipped codec decodes to the same pixels under every CPU setting (issue #10).

The same `.bae` files are decoded in subprocesses under PyTorch's, oneDNN's, numpy's and
OpenBLAS's instruction set dispatch (baseline SSE4.1, AVX2, the machine's own) and with 1
and 2 threads, by the torch decoder and by the torch-free one; the decoded bytes must be
identical. Each subprocess also encodes the images itself (the encoder is float, so its
bytes may differ) and decodes its own files: the native process must decode those to the
same pixels, so every machine parses every stream alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmarks import cross_isa

from blendae import codec
from blendae.models.hyperprior import MeanScaleHyperprior

# The benchmark's settings (the instruction sets of torch, oneDNN and numpy; one thread),
# and two threads.
SETTINGS = {**cross_isa.SETTINGS, "2 threads": {"OMP_NUM_THREADS": "2"}}

CHILD = """
import hashlib, json, sys
from pathlib import Path
import numpy as np
from blendae import codec
from blendae.codec import container, decode
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
digest = lambda images: hashlib.sha256(b"".join(d.tobytes() for d in images)).hexdigest()
result = {}
for name in json.loads((folder / "models.json").read_text()):
    datas = [f.read_bytes() for f in sorted((folder / name).glob("*.bae"))]
    result[name] = {
        "decoded": digest(codec.decompress_batch(datas)),
        "torch-free": digest(decode.decode_parsed([container.unpack(d) for d in datas])),
    }
    images = [np.load(f) for f in sorted(folder.glob("image*.npy"))]
    own = codec.compress_batch(images, name)
    (out / name).mkdir(parents=True)
    for i, data in enumerate(own):
        (out / name / f"{i:03d}.bae").write_bytes(data)
    mine = codec.decompress_batch(own)
    result[name]["own"] = digest(mine)
print(json.dumps(result))
"""


def _digest(images: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(im.tobytes() for im in images)).hexdigest()


def _test_images() -> list[np.ndarray]:
    """Smooth random images, photo-like, at 32×32 and two other sizes (padding, cropping;
    the 70×90 one is coded as 32×32 patches in one stream)."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(32, 32)] * 24 + [(40, 56), (70, 90)]:
        small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
        big = np.kron(small, np.ones((4, 4, 1)))[:h, :w] + rng.normal(0, 6, (h, w, 3))
        out.append(np.clip(big, 0, 255).astype(np.uint8))
    return out


def test_every_shipped_codec_is_an_exact_decoder() -> None:
    assert codec.zoo_entries(), "no shipped codec models"
    for name in codec.zoo_entries():
        assert isinstance(codec.load_codec(name).model, MeanScaleHyperprior), name


def test_decoded_pixels_are_identical_under_every_instruction_set_and_thread_count(
    tmp_path: Path,
) -> None:
    images = _test_images()
    names = list(codec.zoo_entries())
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "models.json").write_text(json.dumps(names))
    for i, image in enumerate(images):
        np.save(shared / f"image{i:03d}.npy", image)
    expected = {}
    for name in names:
        files = codec.compress_batch(images, name)
        (shared / name).mkdir()
        for i, data in enumerate(files):
            (shared / name / f"{i:03d}.bae").write_bytes(data)
        expected[name] = _digest(codec.decompress_batch(files))

    for setting, env in SETTINGS.items():
        out = tmp_path / setting.replace(" ", "-")
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(shared), str(out)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        report = json.loads(result.stdout.strip().splitlines()[-1])
        for name in names:
            assert report[name]["decoded"] == expected[name], (setting, name)
            assert report[name]["torch-free"] == expected[name], (setting, name)
            own = sorted((out / name).glob("*.bae"))
            here = codec.decompress_batch([f.read_bytes() for f in own])
            assert _digest(here) == report[name]["own"], (setting, name)


@pytest.mark.parametrize("threads", [1, 2])
def test_batching_does_not_change_a_single_bit(threads: int) -> None:
    import torch

    images = _test_images()[:24]
    files = codec.compress_batch(images)
    together = codec.decompress_batch(files)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        alone = [codec.decompress_batch([f])[0] for f in files[:5]]
    finally:
        torch.set_num_threads(previous)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=False))
