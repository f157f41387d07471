"""`blendae compress/decompress` under fuzzing: mutated images of every format, mutated
`.bae` files, mutated run folders, and random command sequences whose outputs point at
inputs, at each other and at existing files. Whatever happens: exit 0 or 2, at most one
stderr line on failure, never a traceback, and nothing the user had changes unless
--force named it."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from blendae import codec as api
from conftest import blendae, snapshot

FORMATS = {"png": "PNG", "jpg": "JPEG", "ppm": "PPM", "bmp": "BMP", "gif": "GIF", "tif": "TIFF"}
FORMATS["webp"] = "WEBP"


@pytest.fixture(scope="module")
def seeds(codec_run: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """name → bytes of the valid files that mutations start from."""
    folder = tmp_path_factory.mktemp("seeds")
    image = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    found = {}
    for suffix, fmt in FORMATS.items():
        Image.fromarray(image).save(folder / f"x.{suffix}", format=fmt)
        found[f"x.{suffix}"] = (folder / f"x.{suffix}").read_bytes()
    found["x.bae"] = api.compress(image, codec_run)
    found["gray.bae"] = api.compress(image[..., 0], codec_run)
    for name in ("config.json", "model.safetensors"):
        found[name] = (Path(codec_run) / name).read_bytes()
    return found


mutation = st.one_of(
    st.tuples(st.just("set"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.integers(0, 255)),
)


def mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in mutations:
        pos = int(where * len(buf))
        if kind == "set" and buf:
            buf[min(pos, len(buf) - 1)] = value
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = bytes([value])
    return bytes(buf)


def check(rc: int, out: list[str], err: list[str]) -> None:
    assert rc in (0, 2), (rc, err)
    assert not any("Traceback" in line for line in err), err
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("blendae: error: "), err
        assert out == []


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(
        [*(f"x.{s}" for s in FORMATS), "x.bae", "gray.bae", "config.json", "model.safetensors"]
    ),
    mutations=st.lists(mutation, min_size=1, max_size=4),
)
def test_mutated_inputs_exit_0_or_2_in_one_line(
    seeds: dict[str, bytes], codec_run: str, name: str, mutations: list[tuple[str, float, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = root / "run"
        shutil.copytree(codec_run, run)
        target = run / name if name in ("config.json", "model.safetensors") else root / name
        target.write_bytes(mutate(seeds[name], mutations))
        if target.parent == run:  # a damaged model: code a valid image with it
            (root / "x.png").write_bytes(seeds["x.png"])
            argv = ["compress", root / "x.png", "-o", root / "out.bae", "--model", run]
        elif name.endswith(".bae"):
            argv = ["decompress", target, "-o", root / "out" / "x.png", "--model", run]
        else:
            argv = ["compress", target, "-o", root / "out" / "x.bae", "--model", run]
        before = snapshot(root)
        rc, out, err = blendae(*argv)
        check(rc, out, err)
        after = snapshot(root)
        assert {k: v for k, v in after.items() if k in before} == before
        if rc == 2:
            assert after == before  # a failure writes nothing


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["compress", "decompress"]),
            st.lists(st.integers(0, 9), min_size=1, max_size=3),
            st.integers(0, 9),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_command_sequences_change_only_what_force_named(
    seeds: dict[str, bytes], codec_run: str, ops: list[tuple[str, list[int], int, bool, bool]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pics").mkdir()
        (root / "pics" / "a.png").write_bytes(seeds["x.png"])
        (root / "pics" / "b.jpg").write_bytes(seeds["x.jpg"])
        (root / "a.bae").write_bytes(seeds["x.bae"])
        (root / "c.png").write_bytes(seeds["x.gif"])  # a GIF named .png: still an image
        (root / "notes.txt").write_text("mine")
        paths = [
            root / "pics",
            root / "pics" / "a.png",
            root / "pics" / "b.jpg",
            root / "a.bae",
            root / "c.png",
            root / "notes.txt",
            root / "new",
            root / "new.bae",
            root / "new.png",
            root,
        ]
        for command, picks, out, force, recursive in ops:
            before = snapshot(root)
            argv = [command, *(paths[i] for i in dict.fromkeys(picks)), "-o", paths[out]]
            argv += ["--model", codec_run] + ["--force"] * force + ["--recursive"] * recursive
            rc, written, err = blendae(*argv)
            check(rc, written, err)
            after = snapshot(root)
            named = {str(Path(w).relative_to(root)) for w in written} if force else set()
            changed = {k for k in before if after.get(k) != before[k]}
            assert changed <= named, (argv, changed, err)
            for w in written:  # an output is never one of the inputs
                assert str(Path(w).resolve()) not in {
                    str(p.resolve()) for i in picks for p in [paths[i]] if p.is_file()
                }
            if rc == 2:
                assert after == before, (argv, err)


def test_file_hashes_helper_sees_content_changes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    before = snapshot(tmp_path)
    (tmp_path / "f").write_bytes(b"2")
    assert snapshot(tmp_path) != before
    assert hashlib.sha256(b"1").hexdigest() in before["f"]
