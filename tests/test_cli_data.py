"""`blendae run/train/evaluate --data SPEC` end to end: every kind of source on the real
mirror (small limits), and the CLI's refusals of bad data options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blendae import runs
from conftest import blendae, snapshot

SMALL = ("--epochs", "1", "--limit-train", "256", "--limit-test", "64", "--no-tensorboard")


@pytest.mark.mirror
@pytest.mark.parametrize(
    ("spec", "channels"),
    [
        ("cifar10", 3),
        ("mnist", 1),
        ("fashion-mnist", 1),
        ("blend:cifar10+fashion-mnist", 3),
        ("blend:mnist+fashion-mnist", 3),
    ],
)
def test_run_on_any_builtin_spec(
    spec: str, channels: int, tmp_path: Path, real_cache: Path
) -> None:
    out = tmp_path / "run"
    rc, stdout, err = blendae("run", "--data", spec, *SMALL, "--out", out, "--cache", real_cache)
    assert rc == 0, err[-3:]
    assert stdout[-1].startswith(f"{out}: test loss")
    config = json.loads((out / runs.CONFIG).read_text())
    assert (config["data"], config["preset"]) == (spec, "data")
    state = runs.load_state(out)
    assert state["channels"] == channels and len(state["space"]["lo"]) == channels
    assert f"Data `{spec}`" in (out / runs.SUMMARY).read_text()
    for name in (runs.LOSS_PLOT, runs.RECONSTRUCTIONS, runs.FINAL):
        assert (out / name).is_file()
    # the same run measured on another spec's test split: printed, the report untouched
    before = (out / runs.FINAL).read_text()
    other = (
        "blend:cifar10+mnist" if channels == 3 else "mnist" if spec != "mnist" else "fashion-mnist"
    )
    rc, stdout, err = blendae("evaluate", out, "--data", other, "--json")
    assert rc == 0, err[-3:]
    assert json.loads(stdout[-1])["test_psnr"] > 5
    if channels == 1:  # a gray model cannot code color images
        rc, _, err = blendae("evaluate", out, "--data", "cifar10")
        assert rc == 2 and "codes gray images" in err[-1]
    assert (out / runs.FINAL).read_text() == before
    # resuming with other data is refused, nothing changes
    rc, _, err = blendae(
        "train", "--resume", out, "--data", "cifar10" if spec != "cifar10" else "mnist"
    )
    assert rc == 2 and "--data" in err[-1]


@pytest.mark.mirror
def test_augmented_random_pairs_and_separation_on_another_pair(
    tmp_path: Path, real_cache: Path
) -> None:
    out = tmp_path / "aug"
    args = ("--augment", "hflip,rot90,transpose,invert", "--pairing", "random")
    rc, _, err = blendae("run", *args, *SMALL, "--out", out, "--cache", real_cache)
    assert rc == 0, err[-3:]
    assert json.loads((out / runs.CONFIG).read_text())["preset"] == "seed"  # the study's data
    sep = tmp_path / "sep"
    model = ("--model", "unet-sep", "--preset", "unit", "--model-args", '{"widths": [8, 16]}')
    rc, _, err = blendae(
        "run", "--data", "blend:cifar10+fashion-mnist", *model, *SMALL, "--out", sep,
        "--cache", real_cache,
    )  # fmt: skip
    assert rc == 0, err[-3:]
    final = json.loads((sep / runs.FINAL).read_text())
    assert final["test_psnr_cifar"] > 5 and final["test_psnr_mnist"] > 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "cifar100"], "unknown --data"),
        (["--data", "blend:cifar10"], "a blend names two sources"),
        (["--data", "cifar10", "--preset", "seed"], "preset 'seed'"),
        (["--size", "40"], "multiple of 16"),
        (["--augment", "blur"], "--augment"),
        (["--split", "90/x/5"], "90/5/5"),
        (["--split", "90/20/5"], "--split"),
        (["--channels", "2"], "invalid choice"),
        (["--pairing", "any"], "invalid choice"),
    ],
)
def test_bad_data_options_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    rc, _, err = blendae("train", *argv, "--out", tmp_path / "x")
    assert rc == 2 and message in " ".join(err)
    assert not (tmp_path / "x").exists()


def _image_folder(root: Path, n: int, gray: bool = False) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        h, w = rng.integers(32, 60, 2)
        shape = (h, w) if gray else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def test_run_on_a_folder_skips_bad_files_and_writes_only_run_and_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = _image_folder(tmp_path / "images", 60)
    (images / "cut.png").write_bytes((images / "000.png").read_bytes()[:40])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "small.png")
    (images / "notes.txt").write_text("not an image")
    before = snapshot(images)
    out, cache = tmp_path / "run", tmp_path / "cache"
    rc, _, err = blendae("run", "--data", f"folder:{images}", *SMALL, "--out", out,
                              "--cache", cache)  # fmt: skip
    assert rc == 0, err[-3:]
    assert snapshot(images) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "images", "run"]
    log = caplog.text + "\n".join(err)
    assert "cut.png" in log and "small.png" in log and "Traceback" not in log
    assert json.loads((out / runs.CONFIG).read_text())["data"] == f"folder:{images}"
    assert runs.load_state(out)["channels"] == 3


def test_a_gray_folder_trains_a_gray_model_and_val_uses_its_own_split(tmp_path: Path) -> None:
    images = _image_folder(tmp_path / "gray", 60, gray=True)
    out = tmp_path / "run"
    rc, _, err = blendae("train", "--data", f"folder:{images}", "--model", "seed", "--val", "3",
                         *SMALL, "--out", out, "--cache", tmp_path / "cache")  # fmt: skip
    assert rc == 0, err[-3:]
    assert runs.load_state(out)["channels"] == 1
    _, model = runs.load_model(out)
    assert model.encoder[0].in_channels == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "folder:/no/such/folder"], "no such folder"),
        (["--data", "folder:EMPTY"], "no usable image"),
    ],
)
def test_bad_folders_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    argv = [a.replace("EMPTY", str(empty)) for a in argv]
    rc, _, err = blendae("train", *argv, "--out", tmp_path / "x", "--cache", tmp_path / "c")
    assert rc == 2 and message in err[-1], err[-2:]
    assert not (tmp_path / "x").exists()
