"""Any `--data` spec as a run's data (`blendae.data.load_data`), on tiny fixtures in the
official formats, and the study's default run against numbers recorded from blendae 0.5."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from blendae import runs
from blendae.config import RunConfig
from blendae.data import load_blended, load_data, to_pixels
from blendae.data.formats import MNIST_FILES
from blendae.data.normalize import study_space
from blendae.errors import BlendaeError
from blendae.training.loop import train
from conftest import (
    FIXTURE_COUNTS,
    TinyDatasets,
    blendae,
    idx_bytes,
    write_gz,
    write_sha256sums,
)

CPU = torch.device("cpu")
REFERENCE = json.loads((Path(__file__).parent / "data" / "runs" / "study-0.5.json").read_text())


@pytest.fixture
def mirror(tiny_mirror: Path, tiny_datasets: TinyDatasets) -> Path:
    """The tiny mirror plus a Fashion-MNIST subfolder (MNIST's file names) with its sums."""
    fashion = tiny_mirror / "fashion-mnist"
    fashion.mkdir()
    rng = np.random.default_rng(7)
    for split, (images_name, labels_name) in MNIST_FILES.items():
        n = len(tiny_datasets.mnist[split][0])
        write_gz(fashion / images_name, idx_bytes(rng.integers(0, 256, (n, 28, 28), np.uint8)))
        write_gz(fashion / labels_name, idx_bytes(rng.integers(0, 10, n, np.uint8)))
    write_sha256sums(fashion)
    return tiny_mirror


def load(spec: str, mirror: Path, tmp_path: Path, **kw: object):
    kw.setdefault("preset", "data")
    return load_data(
        spec, mirror=str(mirror), cache=tmp_path / "cache", progress=False,
        counts=FIXTURE_COUNTS, **kw,
    )  # fmt: skip


def test_gray_source_alone_is_one_channel_normalized_by_its_statistics(
    mirror: Path, tmp_path: Path
) -> None:
    data = load("fashion-mnist", mirror, tmp_path)
    assert data.channels == 1 and data.space.channels == 1
    x = data.tensors("train", None, CPU)["x"]
    assert x.shape == (FIXTURE_COUNTS.mnist_train, 1, 32, 32)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    pixels = to_pixels(x, data.space)
    assert float(pixels.min()) > -0.01 and float(pixels.max()) < 255.01
    assert load("fashion-mnist", mirror, tmp_path, channels=3).channels == 3
    with pytest.raises(BlendaeError, match="gray sources"):
        load("cifar10", mirror, tmp_path, channels=1)


def test_fashion_mnist_is_verified_against_its_own_sums(mirror: Path, tmp_path: Path) -> None:
    name = MNIST_FILES["test"][0]
    write_gz(mirror / "fashion-mnist" / name, idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    with pytest.raises(BlendaeError, match=r"sha256|checksum"):
        load("fashion-mnist", mirror, tmp_path)


def test_a_blend_is_the_mean_of_its_normalized_sources(mirror: Path, tmp_path: Path) -> None:
    data = load("blend:cifar10+fashion-mnist", mirror, tmp_path, preset="unit", sources=True)
    batch = data.tensors("test", None, CPU)
    truth = (batch["cifar"] + batch["mnist"]) / 2  # unit: the pixel mean image / 255
    torch.testing.assert_close(batch["x"], truth, rtol=0, atol=1e-6)
    assert len(batch["x"]) == FIXTURE_COUNTS.cifar_batch


def test_the_study_through_the_general_path_equals_its_cached_blend(
    mirror: Path, tmp_path: Path
) -> None:
    cached = load("blend:cifar10+mnist", mirror, tmp_path, preset="seed")
    assert cached.study is not None
    general = load("blend:cifar10+mnist", mirror, tmp_path, preset="seed", augment_ops=["hflip"])
    assert general.study is None and general.space == study_space("seed")
    for split in ("train", "test"):
        assert torch.equal(
            general.tensors(split, None, CPU)["x"], cached.tensors(split, None, CPU)["x"]
        )


def test_seed_preset_is_the_studys_alone(mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(BlendaeError, match="preset 'seed'"):
        load("cifar10", mirror, tmp_path, preset="seed")
    with pytest.raises(BlendaeError, match="pairs two sources"):
        load("cifar10", mirror, tmp_path, pairing="random")


def test_augmented_batches_depend_only_on_seed_epoch_and_step(mirror: Path, tmp_path: Path) -> None:
    ops = ["hflip", "vflip", "rot90", "transpose", "invert"]
    data = load("blend:cifar10+mnist", mirror, tmp_path, augment_ops=ops, pairing="random")
    a, b = data.train_set(None, None, 0, CPU), data.train_set(None, None, 0, CPU)
    idx = torch.arange(8)
    assert torch.equal(a.batch(idx, 1, 3)["x"], b.batch(idx, 1, 3)["x"])
    assert not torch.equal(a.batch(idx, 1, 3)["x"], a.batch(idx, 2, 3)["x"])
    plain = data.tensors("train", 8, CPU)["x"]
    assert not torch.equal(a.batch(idx, 1, 3)["x"], plain)
    assert len(a) == 5 * FIXTURE_COUNTS.cifar_batch  # random pairing: every first-source image


def test_training_on_any_spec_resumes_exactly(mirror: Path, tmp_path: Path) -> None:
    """An augmented, randomly paired run stopped after epoch 1 and resumed gives the same
    metrics as one that ran straight through."""
    data = load("blend:cifar10+fashion-mnist", mirror, tmp_path, augment_ops=["rot90", "invert"],
                pairing="random")  # fmt: skip
    config = RunConfig(
        data="blend:cifar10+fashion-mnist", model="seed", epochs=2, batch_size=4,
        augment=["rot90", "invert"], pairing="random", tensorboard=False, bf16=False,
    )  # fmt: skip
    straight = train(config, tmp_path / "a", data, progress=False)
    train(RunConfig(**{**config.__dict__, "epochs": 1}), tmp_path / "b", data, progress=False)
    resumed = train(config, tmp_path / "b", data, resume=True, progress=False)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(straight) == drop(resumed)
    state = runs.load_state(tmp_path / "a")
    assert state["space"] == data.space.to_dict() and state["channels"] == 3
    other = RunConfig(**{**config.__dict__, "data": "cifar10"})
    with pytest.raises(BlendaeError, match="--data"):
        runs.check_resume(runs.load_config(tmp_path / "a"), other)


def test_a_gray_run_builds_a_one_channel_model(mirror: Path, tmp_path: Path) -> None:
    data = load("mnist", mirror, tmp_path)
    config = RunConfig(data="mnist", model="seed", epochs=1, batch_size=8, tensorboard=False)
    train(config, tmp_path / "gray", data, progress=False)
    _, model = runs.load_model(tmp_path / "gray")
    assert model.encoder[0].in_channels == 1


# ---------------------------------------------------------------- the real mirror


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.mirror
def test_the_studys_tensors_are_0_5s(real_cache: Path) -> None:
    """The default data, through `load_data`, is bit for bit what blendae 0.5 trained on."""
    for preset in ("seed", "unit"):
        data = load_data("blend:cifar10+mnist", preset=preset, cache=real_cache, progress=False)
        for split in ("train", "test"):
            assert _sha(data.tensors(split, None, CPU)["x"]) == REFERENCE["tensors"][preset][split]
    sources = load_blended("unit", cache=real_cache, progress=False, sources=True).sources
    for split in ("train", "test"):
        got = [_sha(sources[split].cifar), _sha(sources[split].mnist)]
        assert got == REFERENCE["tensors"]["sources"][split]


@pytest.mark.mirror
@pytest.mark.parametrize("name", sorted(REFERENCE["runs"]))
def test_the_default_runs_give_0_5s_metrics(name: str, tmp_path: Path, real_cache: Path) -> None:
    """Small runs of the study's data give the metrics 0.5 recorded: exactly on the CPU they
    were recorded on (same kernels), to 1e-4 on others (other float kernels)."""
    ref = REFERENCE["runs"][name]
    rc, _, err = blendae(*ref["args"], "--out", tmp_path / name, "--cache", real_cache)
    assert rc == 0, err[-3:]
    rows = [json.loads(line) for line in (tmp_path / name / runs.METRICS).read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    if torch.backends.cpu.get_cpu_capability() == REFERENCE["cpu_capability"]:
        assert rows == ref["metrics"]
    else:
        assert len(rows) == len(ref["metrics"])
        for row, expected in zip(rows, ref["metrics"], strict=True):
            assert row == pytest.approx(expected, rel=1e-4)
    shutil.rmtree(tmp_path / name)


# ---- mixtures: mix:A,B,... --------------------------------------------------------------


def test_a_mixture_is_the_union_of_its_parts_in_one_space(mirror: Path, tmp_path: Path) -> None:
    spec = "mix:cifar10,mnist,blend:cifar10+fashion-mnist"
    data = load(spec, mirror, tmp_path, preset="unit", augment_ops=("hflip",), pairing="random")
    parts = [load(p, mirror, tmp_path, preset="unit", channels=3) for p in spec[4:].split(",")]
    assert data.channels == 3 and data.manifest["data"] == spec
    assert data.length("train") == sum(p.length("train") for p in parts)
    test = data.tensors("test", None, CPU)["x"]
    assert test.shape == (sum(p.length("test") for p in parts), 3, 32, 32)
    first = parts[1].tensors("test", None, CPU)["x"]  # the digits, gray copied to RGB
    start = parts[0].length("test")
    assert torch.equal(test[start : start + len(first)], first)
    train = data.train_set(None, None, 0, CPU)
    batch = train.batch(torch.arange(len(train)), epoch=0, step=0)["x"]
    assert batch.shape == (len(train), 3, 32, 32) and float(batch.min()) >= 0


def test_a_mixtures_hold_out_takes_every_part_in_proportion_and_never_trains_on_it(
    mirror: Path, tmp_path: Path
) -> None:
    data = load("mix:cifar10,mnist", mirror, tmp_path, preset="unit")
    total = data.length("train")
    n = total - 8
    held = data.tensors("train", None, CPU, start=n)["x"]
    train = data.train_set(None, n, 0, CPU)
    assert len(held) == 8 and len(train) == n
    counts = data._held_out(n)
    assert all(k >= 1 for k in counts) and sum(counts) == 8
    seen = train.batch(torch.arange(len(train)), epoch=0, step=0)["x"].flatten(1)
    for image in held.flatten(1):
        assert not bool((seen == image).all(dim=1).any())


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"preset": "data"}, "--preset unit"), ({"preset": "unit", "sources": True}, "separation")],
)
def test_a_mixture_refuses_per_source_spaces_and_separation(
    mirror: Path, tmp_path: Path, kw: dict, message: str
) -> None:
    with pytest.raises(BlendaeError, match=message):
        load("mix:cifar10,mnist", mirror, tmp_path, **kw)


def test_a_mixtures_limit_is_shared_in_proportion(mirror: Path, tmp_path: Path) -> None:
    data = load("mix:cifar10,mnist", mirror, tmp_path, preset="unit")
    assert len(data.train_set(10, None, 0, CPU)) <= 10
