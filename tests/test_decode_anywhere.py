"""Decode anywhere (issue #21): the torch-free decoder gives the torch decoder's pixels, and
the command line starts, and decodes a few files, without importing torch.

Every model found on disk is checked (the shipped zoo and every baseline kept for old
files), so a model added later without torch-free support fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import constriction
import numpy as np
import pytest

from blendae import ans
from blendae.codec import container, decode, files, images
from blendae.codec.decode import layers
from blendae.codec.decode import models as decode_models
from blendae.codec.zoo import zoo_entries, zoo_folder
from blendae.errors import BlendaeError
from blendae.models import exact
from conftest import holding, repack

ROOT = Path(__file__).parents[1]
MODELS = [zoo_folder() / f"{name}.json" for name in zoo_entries()] + sorted(
    ROOT.glob("benchmarks/baseline/*/q*.json")
)
QUALITIES = (0, 37, 63, 100)  # the general model's: both ends, its default, one between
SRC = str(ROOT / "src")


def _model_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def blends(count: int = 64, seed: int = 0) -> list[np.ndarray]:
    """CIFAR-like 32×32 blends (smooth colour fields, edges and noise), then pure noise and
    edge sizes: 1×1, 17×33 in colour and in gray, and 40×72 in colour and gray (patches)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (9, 9, 3)).astype(np.float32)
        big = np.kron(small, np.ones((4, 4, 1)))[:32, :32] + rng.normal(0, 8, (32, 32, 3))
        out.append(np.clip(big, 0, 255).astype(np.uint8))
    out.append(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    out.append(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8))
    out.append(rng.integers(0, 256, (17, 33, 3), dtype=np.uint8))
    out.append(rng.integers(0, 256, (17, 33), dtype=np.uint8))
    small = rng.integers(0, 256, (11, 19, 3)).astype(np.float32)
    larger = np.clip(np.kron(small, np.ones((4, 4, 1)))[:40, :72], 0, 255).astype(np.uint8)
    out += [larger, larger[:, :, 2]]
    return out


def _both(datas: list[bytes], model: str | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Decoded by torch, and by the torch-free decoder."""
    parsed = [container.unpack(d) for d in datas]
    return images.decompress_parsed(parsed, model), decode.decode_parsed(parsed, model)


def _identical(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("meta", MODELS, ids=_model_name)
def test_the_torch_free_decoder_gives_torch_s_pixels(meta: Path) -> None:
    datas = images.compress_batch(blends(), str(meta))
    by_torch, here = _both(datas, str(meta))
    if decode.load_decoder(str(meta)).exact:
        _identical(by_torch, here)
    else:  # float networks (0.2's factorized models): one level, rarely
        diff = np.concatenate(
            [np.abs(a.astype(int) - b).ravel() for a, b in zip(by_torch, here, strict=True)]
        )
        assert diff.max() <= 1 and np.mean(diff) < 1e-3


@pytest.mark.parametrize("quality", QUALITIES)
def test_the_general_model_s_files_decode_to_torch_s_pixels_at_every_quality(
    quality: int,
) -> None:
    """The variable-rate model: the decoded latent scaled by the stored float32 row
    inv_gain_table[quality] before g_s, the same bits as torch's decoder (blends, noise,
    1×1, 17×33 and 40×72 in colour and gray; by name and by id alone). Images with a side
    over 48 are coded as 32×32 patches in one stream (version 4)."""
    datas = images.compress_batch(blends(24, seed=quality), "general", quality)
    headers = [container.unpack(d)[0] for d in datas]
    assert all(h.quality == quality for h in headers)
    for data, header in zip(datas, headers, strict=True):
        patched = max(header.height, header.width) > 48
        assert header.patch == (32 if patched else None)
        assert data[2] == (container.VERSION_PATCHES if patched else container.VERSION_COMPACT)
    assert any(h.patch for h in headers)
    _identical(*_both(datas, "general"))
    _identical(*_both(datas, None))
    assert decode.load_decoder("general").variable_rate


def test_forged_qualities_are_refused_by_both_decoders() -> None:
    """Quality 101, a quality byte on a fixed-rate model's file, none on the general
    model's: errors, from the torch decoder and the torch-free one alike."""
    picture = blends(1)[:1]
    general = images.compress_batch(picture, "general", 37)[0]
    fixed = images.compress_batch(picture, "q3")[0]
    gid, qid = (bytes.fromhex(zoo_entries()[name]["id"]) for name in ("general", "q3"))
    assert repack(general, gid, 3, b"\x25") == general
    assert repack(fixed, qid, 3, b"\x7f") == fixed
    cases = {
        "quality 101": repack(general, gid, 3, b"\x65"),
        "quality 126": repack(general, gid, 3, b"\x7e"),
        "a quality on q3": repack(fixed, qid, 3, b"\x00"),
        "no quality on general": repack(general, gid, 3, b"\xff"),
        "version 2, quality 255": repack(general, gid, 2, b"\xff"),
        "version 2, a quality on q3": repack(fixed, qid, 2, b"\x00"),
        "version 1 on general": repack(general, gid, 1, b""),
    }
    for what, data in cases.items():
        with pytest.raises(BlendaeError, match=r"corrupt \.bae header") as by_torch:
            images.decompress_parsed([container.unpack(data)], None)
        with pytest.raises(BlendaeError, match=r"corrupt \.bae header") as here:
            decode.decode(data)
        assert str(by_torch.value) == str(here.value), what
    with pytest.raises(BlendaeError, match="quality 101"):
        container.unpack(cases["quality 101"])


@pytest.mark.parametrize("record", sorted((ROOT / "tests" / "data").glob("*.json")))
def test_golden_files_decode_to_their_recorded_pixels(record: Path) -> None:
    kept = [decode.load_decoder(str(p)) for p in MODELS]
    for name, want in json.loads(record.read_text()).items():
        data = (record.parent / name).read_bytes()
        assert container.unpack(data)[0].quality == want.get("quality")
        decoded = decode.decode(data, kept)
        assert list(decoded.shape) == want["shape"]
        assert hashlib.sha256(decoded.tobytes()).hexdigest() == want["sha256"]


@pytest.mark.parametrize(("name", "quality"), [("q1", None), ("general", 37)])
def test_tiles_and_bands_decode_to_torch_s_pixels(
    monkeypatch: pytest.MonkeyPatch, name: str, quality: int | None
) -> None:
    """Torch in 64-pixel tiles, the torch-free decoder in bands of a few latent rows, both
    on a 96×160 image: exact networks give the untiled bits either way."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    data = images.compress_batch([image], name, quality)
    untiled = images.decompress_batch(data, name)
    model = images.load_codec(name).model
    monkeypatch.setattr(model, "tile_above", 1000)
    monkeypatch.setattr(model, "tile", 64)
    monkeypatch.setattr(decode_models, "BATCH_PIXELS", 4096)
    by_torch, here = _both(data, name)
    assert here[0].tobytes() == by_torch[0].tobytes() == untiled[0].tobytes()


@pytest.mark.slow
def test_a_tiled_2048x1536_image_decodes_to_torch_s_pixels() -> None:
    """Above 1 Mpixel torch decodes in 256-pixel tiles, the torch-free decoder in bands
    (~90 s on the busy 2-core machine: run with BLENDAE_SLOW_TESTS=1)."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (49, 65, 3)).astype(np.float32)
    image = np.clip(np.kron(small, np.ones((32, 32, 1)))[:1536, :2048], 0, 255).astype(np.uint8)
    data = images.compress_batch([image], "q0")
    by_torch, here = _both(data, "q0")
    assert here[0].shape == (1536, 2048, 3) and here[0].tobytes() == by_torch[0].tobytes()


def test_the_derivation_constants_are_the_torch_layers() -> None:
    assert (layers.ACT_LIMIT, layers.GAMMA_LIMIT, layers.HEADROOM) == (
        exact.ACT_LIMIT,
        exact.GAMMA_LIMIT,
        exact.HEADROOM,
    )


@pytest.mark.parametrize(("k", "out"), [(1, 48), (3, 48), (3, 12)])
def test_the_numpy_convolution_gives_torch_s_bits_on_either_path(k: int, out: int) -> None:
    """Small activations take one kernel of the whole weights, large ones (one image of a
    batch is enough) the two digits: the same bits as the torch layer either way. With
    fewer outputs (whole weights: 48; 12, and its 24 digits) than the 64 inputs, numpy
    adds the kernel positions' products shifted (`exact_conv`)."""
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, out, k, padding=k // 2)
    with torch.no_grad():
        conv.weight.abs_()  # one sign: the sums grow as fast as they can
    ours = exact.ExactConv(conv, step=max(3.0 * 2, 1e-6) / 2047)
    theirs = layers.ExactConv.derive(
        conv.weight.detach().numpy(), conv.bias.detach().numpy(), np.float32(3.0)
    )
    assert theirs.room == ours.room
    rng = np.random.default_rng(1)
    small = rng.random((6, 8, 8, 64), dtype=np.float32) * np.float32(0.02)
    large = rng.random((6, 8, 8, 64), dtype=np.float32) * np.float32(3)
    for x in (small, large, np.concatenate([large[:2], small[:3], large[2:3]])):
        with torch.no_grad():
            want = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(theirs(x), want)
    half = ours.room // 2 + 1  # the bound's edge cases: both layers decide alike
    for totals in [[(4, 4, ours.room)], [(4, 4, ours.room + 1)], [(4, 4, half), (4, 5, half)]]:
        a = holding(*totals)
        assert theirs._fits(a.permute(0, 2, 3, 1).numpy()) == ours.fits(a)


def test_the_browser_benchmark_names_the_models_of_its_files() -> None:
    """Version 3 and 4 headers carry two bytes of the id: the benchmark must still find the
    shipped model of each file (0.8 and 0.9's run stopped at 'not shipped: 2030')."""
    from benchmarks.browser_decode import models_of

    datas = images.compress_batch(blends(2), "general") + images.compress_batch(blends(1), "q3")
    datas.append(images.compress_batch([np.zeros((64, 80, 3), np.uint8)], "q1")[0])  # patches
    assert models_of(datas) == ["general", "q1", "q3"]
    forged = bytearray(datas[0])
    forged[3:5] = b"\xff\xfe"  # the id field: no shipped model's id starts so
    with pytest.raises(BlendaeError, match="not shipped: fffe"):
        models_of([bytes(forged)])


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
"""

DECODE_CHILD = (
    BLOCK_TORCH
    + """
import hashlib, sys
from pathlib import Path
from blendae.codec import decode
for path in sys.argv[1:]:
    print(hashlib.sha256(decode.decode(Path(path).read_bytes()).tobytes()).hexdigest())
assert "torch" not in sys.modules
"""
)


def _digests(decoded: list[np.ndarray]) -> list[str]:
    return [hashlib.sha256(d.tobytes()).hexdigest() for d in decoded]


def test_decoding_needs_no_torch(tmp_path: Path) -> None:
    paths, expected = [], []
    for name in ("q0", "q2", "q4"):
        datas = images.compress_batch(blends(2), name)
        expected += _digests(images.decompress_parsed([container.unpack(d) for d in datas], None))
        for i, data in enumerate(datas):
            paths.append(tmp_path / f"{name}-{i}.bae")
            paths[-1].write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", DECODE_CHILD, *map(str, paths)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


CLI_CHILD = """
import sys
from blendae import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch" in sys.modules, code)
"""

STARTS = [
    ["--version"],
    ["--help"],
    *[[c, "--help"] for c in ("prepare", "train", "run", "evaluate", "compress", "decompress")],
    *[[c, "--help"] for c in ("separate", "serve")],
    ["--no-such-option"],
    ["no-such-command"],
    ["train", "--model", "no-such-model"],
    ["train", "--preset", "no-such-preset"],
    ["train", "--protocol", "no-such-protocol"],
    ["prepare", "--cifar-variant", "no-such-variant"],
    ["compress"],
    # --quality: usage errors, and a fixed-rate model's refusal from its JSON alone
    *[["compress", "x.png", "-o", "y.bae", "--quality", q] for q in ("101", "-1", "abc")],
    ["compress", "x.png", "-o", "y.bae", "--model", "blend-q3", "--quality", "50"],
]


@pytest.mark.parametrize("argv", STARTS, ids=" ".join)
def test_start_up_and_argument_errors_never_import_torch(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CLI_CHILD, *argv],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    torch_loaded, code = result.stdout.split()[-2:]
    assert torch_loaded == "False", result.stdout
    assert code in ("0", "2")


def test_decompressing_a_file_never_imports_torch(tmp_path: Path) -> None:
    bae = tmp_path / "one.bae"
    bae.write_bytes(images.compress_batch(blends(1), None)[0])
    result = subprocess.run(
        [sys.executable, "-c", CLI_CHILD, "decompress", str(bae), "-o", str(tmp_path / "o.png")],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split()[-2:] == ["False", "0"], result.stderr


def test_decompress_gives_the_same_pixels_on_either_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datas = images.compress_batch(blends(8), "q1")
    paths = []
    for i, data in enumerate(datas):
        paths.append(tmp_path / f"{i}.bae")
        paths[-1].write_bytes(data)
    decoded = {}
    for torch_from in (0, 1000):  # every job to torch, every job torch-free
        monkeypatch.setattr(files, "TORCH_FROM", torch_from)
        out = tmp_path / f"out{torch_from}"
        files.decompress_files(paths, out)
        decoded[torch_from] = [(out / f"{i}.png").read_bytes() for i in range(len(paths))]
    assert decoded[0] == decoded[1000]


def test_a_fresh_environment_with_only_the_decoder_s_packages_decodes(tmp_path: Path) -> None:
    """scripts/check_torchfree.sh: a new virtualenv with numpy, constriction, safetensors
    and pillow only decodes files of every shipped model to torch's pixels."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_torchfree.sh"), str(tmp_path / "venv")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode == 3:  # the script's code for "cannot build the environment here"
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout + result.stderr


def _documented_decoder(data: bytes) -> tuple[Callable[[list[int]], int], Callable[[], int]]:
    """docs/format.md's ANS decoder in plain Python: (pop a symbol of integer
    probabilities, the state)."""
    data += b"\0" * (-len(data) % 4)
    words = [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]
    state = 0
    if words:
        assert words[-1] != 0
        state = words.pop()
        if words:
            state = (state << 32) | words.pop()

    def pop(pmf: list[int]) -> int:
        nonlocal state
        q, c = state % (1 << 24), 0
        for s, p in enumerate(pmf):
            if c <= q < c + p:
                state = (state >> 24) * p + (q - c)
                if state < 1 << 32 and words:
                    state = (state << 32) | words.pop()
                return s
            c += p
        raise AssertionError("the probabilities do not sum to 2**24")

    return pop, lambda: state


def test_format_md_s_ans_arithmetic_decodes_constriction_s_words() -> None:
    """The rules of 'The ANS decoder' and its models, run as written, pop what the encoder
    pushed (a Gauss table, the escape lengths, raw bits) and end on state 0."""
    weights = decode.load_decoder("q2").weights
    r = int(weights["gaussian._radius"][20])
    table = weights["gaussian._pmf"][20, : 2 * r + 1].astype(int).tolist()
    escape = ans._escape_pmf().tolist()
    rng = np.random.default_rng(3)
    pushed = [
        (table, rng.integers(0, len(table), 300)),
        (escape, rng.integers(0, 17, 50)),
        ([1 << 19] * 32, rng.integers(0, 32, 40)),  # Uniform(2**5): 2**19 each
    ]
    coder = constriction.stream.stack.AnsCoder()
    models = [ans.categorical(table), ans.ESCAPE_MODEL, ans.UNIFORM[5]]
    for (_, symbols), model in reversed(list(zip(pushed, models, strict=True))):
        coder.encode_reverse(symbols.astype(np.int32), model)
    pop, state = _documented_decoder(ans.coder_bytes(coder))
    for pmf, symbols in pushed:
        assert [pop(pmf) for _ in symbols] == symbols.tolist()
    assert state() == 0
