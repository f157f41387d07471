"""The TensorBoard logger, read back with TensorBoard's own event reader."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from blendae.errors import BlendaeError
from blendae.training.tensorboard import (
    MISSING_EXTRA,
    TensorBoardLogger,
    scalar_tag,
    tensorboard_available,
)

needs_tensorboard = pytest.mark.skipif(
    not tensorboard_available(),
    reason="needs the tensorboard extra: pip install 'blendae[tensorboard]'",
)


def record(epoch: int) -> dict[str, float]:
    """A codec run's metrics.jsonl line with values that tell the epoch."""
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "test_loss": 0.5 / epoch,
        "test_psnr": 20.0 + epoch,
        "test_ssim": 0.9,
        "test_bpp": 2.0 - 0.1 * epoch,
        "test_psnr_cifar": 25.0 + epoch,
        "seconds": 3.0,
    }


def grid(epoch: int) -> torch.Tensor:
    return torch.full((3, 8, 16), 10 * epoch, dtype=torch.uint8)


def write(log_dir: Path, epochs: range, start_epoch: int, final: bool = False) -> None:
    logger = TensorBoardLogger(
        log_dir, {"model": "conv", "lr": 1e-3, "args": {"N": 64}}, start_epoch
    )
    for epoch in epochs:
        logger.log_epoch(
            record(epoch),
            lr=1e-3 / epoch,
            images_per_second=100.0 * epoch,
            grids={"reconstructions": grid(epoch)},
        )
    if final:
        logger.finish({"epoch": epochs[-1], "test_psnr": 30.0, "test_loss": 0.01})
    logger.close()


def read(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_tags() -> None:
    assert scalar_tag("train_loss") == "loss/train"
    assert scalar_tag("test_psnr") == "test/psnr"
    assert scalar_tag("test_psnr_cifar") == "test/psnr_cifar"
    assert scalar_tag("train_bpp") == "train/bpp"
    assert scalar_tag("seconds") == "time/epoch_seconds"


@needs_tensorboard
def test_epochs_read_back(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    write(tmp_path, range(1, 4), start_epoch=1, final=True)
    events = read(tmp_path)
    tags = events.Tags()
    for tag in (
        "loss/train",
        "loss/test",
        "test/psnr",
        "test/ssim",
        "test/bpp",
        "test/psnr_cifar",
        "time/epoch_seconds",
        "optim/lr",
        "time/images_per_second",
    ):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert "epoch" not in tags["scalars"]
    assert [e.value for e in events.Scalars("test/psnr")] == pytest.approx([21, 22, 23])
    assert [e.value for e in events.Scalars("loss/train")] == pytest.approx([1, 1 / 2, 1 / 3])
    assert [e.value for e in events.Scalars("optim/lr")] == pytest.approx([1e-3, 5e-4, 1e-3 / 3])
    images = events.Images("images/reconstructions")
    assert [(e.step, e.width, e.height) for e in images] == [(1, 16, 8), (2, 16, 8), (3, 16, 8)]
    # the final metrics and hyper-parameters land in the same folder
    assert [e.value for e in events.Scalars("hparam/test_psnr")] == pytest.approx([30.0])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["model"].string_value == "conv"
    assert start.hparams["args.N"].number_value == 64  # nested dicts flattened
    assert len(list(tmp_path.iterdir())) == 1  # one event file, no sub-folders


@needs_tensorboard
def test_resume_has_no_duplicate_steps(tmp_path: Path) -> None:
    write(tmp_path, range(1, 5), start_epoch=1)  # interrupted after logging epochs 1..4
    write(tmp_path, range(3, 7), start_epoch=3)  # the checkpoint held epoch 2: resume at 3
    events = read(tmp_path)
    for tag in ("loss/train", "test/psnr", "optim/lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4, 5, 6], tag
    assert [e.value for e in events.Scalars("test/psnr")] == pytest.approx([21, 22, 23, 24, 25, 26])
    assert [e.step for e in events.Images("images/reconstructions")] == [1, 2, 3, 4, 5, 6]


def test_missing_extra_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    assert not tensorboard_available()
    with pytest.raises(BlendaeError, match="pip install 'blendae\\[tensorboard\\]'") as info:
        TensorBoardLogger(tmp_path, {}, start_epoch=1)
    assert str(info.value) == MISSING_EXTRA
    assert list(tmp_path.iterdir()) == []  # nothing written


@needs_tensorboard
def test_a_training_run_writes_what_metrics_jsonl_says(tiny_splits, tmp_path: Path) -> None:
    """The loop's events, read back with TensorBoard's reader, equal metrics.jsonl, and a
    resumed run has every epoch once."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from blendae import runs
    from blendae.config import RunConfig
    from blendae.training import loop

    config = RunConfig(model="seed", preset="unit", epochs=2, batch_size=32)
    loop.train(config, tmp_path / "run", tiny_splits, progress=False)
    # TensorBoard orders a run's event files by name, whose first key is the second they
    # were created in; a real resume is never within the same second as the session before.
    time.sleep(1.1)
    config.epochs = 3
    loop.train(config, tmp_path / "run", tiny_splits, progress=False, resume=True)
    metrics = [json.loads(line) for line in (tmp_path / "run" / runs.METRICS).open()]
    events = EventAccumulator(str(tmp_path / "run" / runs.TENSORBOARD), size_guidance={"images": 0})
    events.Reload()
    for key, tag in (("train_loss", "loss/train"), ("test_psnr", "test/psnr")):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [1, 2, 3]
        assert [e.value for e in scalars] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert [e.step for e in events.Scalars("optim/lr")] == [1, 2, 3]
    assert [e.step for e in events.Images("images/examples")] == [1, 2, 3]
    assert events.Scalars("hparam/test_loss")[-1].value == pytest.approx(metrics[-1]["test_loss"])
