"""Training loop, checkpoints and resume, on small synthetic data (no mirror needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from blendae.config import RunConfig
from blendae.errors import BlendaeError
from blendae.training import loop
from blendae.training.checkpoint import CHECKPOINT, load_checkpoint


@pytest.fixture
def tiny_data(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Replace the real datasets with 96 train / 40 test random images in [0, 1]."""
    g = torch.Generator().manual_seed(123)
    splits = SimpleNamespace(
        train=torch.rand(96, 3, 32, 32, generator=g),
        test=torch.rand(40, 3, 32, 32, generator=g),
        preset="unit",
    )
    monkeypatch.setattr(loop, "load_blended", lambda *a, **k: splits)
    return splits


def _config(out: Path, **kw: object) -> RunConfig:
    base = dict(out=str(out), model="seed", preset="unit", epochs=3, batch_size=16)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def _strip_time(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def test_metrics_and_outputs(tiny_data: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "run"
    metrics = loop.train(_config(out), progress=False)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert set(m) >= {"epoch", "train_loss", "test_loss", "test_psnr", "test_ssim", "seconds"}
        assert all(math.isfinite(m[k]) for k in ("train_loss", "test_loss", "test_psnr"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == metrics
    assert RunConfig.load(out / "config.json") == _config(out)
    assert (out / CHECKPOINT).is_file() and (out / "model.safetensors").is_file()
    # Learning happens: the last test loss is below the first.
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]


@pytest.mark.parametrize("protocol", ["minibatch", "seed-fullbatch"])
def test_resume_equals_uninterrupted(
    tiny_data: SimpleNamespace, tmp_path: Path, protocol: str
) -> None:
    full = loop.train(_config(tmp_path / "full", protocol=protocol, epochs=4), progress=False)
    # "Interrupt" after 2 epochs, then resume to 4 in the same folder.
    loop.train(_config(tmp_path / "cut", protocol=protocol, epochs=2), progress=False)
    resumed = loop.train(
        _config(tmp_path / "cut", protocol=protocol, epochs=4), resume=True, progress=False
    )
    assert _strip_time(resumed) == _strip_time(full)
    a = load_checkpoint(tmp_path / "full").model
    b = load_checkpoint(tmp_path / "cut").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fullbatch_is_one_step_on_the_full_mean(tiny_data: SimpleNamespace, tmp_path: Path) -> None:
    """One seed-fullbatch epoch equals one Adam step on the whole-set MSE, computed directly."""
    from blendae.models.seed import SeedAutoencoder

    monkey_chunk = loop.FULLBATCH_CHUNK
    loop.FULLBATCH_CHUNK = 25  # force several chunks over the 96 images
    try:
        cfg = _config(tmp_path / "fb", protocol="seed-fullbatch", epochs=1, channels_last=False)
        metrics = loop.train(cfg, progress=False)
    finally:
        loop.FULLBATCH_CHUNK = monkey_chunk
    torch.manual_seed(cfg.seed)
    model = SeedAutoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss = torch.nn.functional.mse_loss(model(tiny_data.train), tiny_data.train)
    loss.backward()
    opt.step()
    assert metrics[0]["train_loss"] == pytest.approx(loss.item(), rel=1e-6)
    trained = load_checkpoint(tmp_path / "fb").model
    for name, p in model.state_dict().items():
        torch.testing.assert_close(trained[name], p, rtol=1e-5, atol=1e-6)


def test_non_empty_out_without_resume_is_refused(
    tiny_data: SimpleNamespace, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(BlendaeError, match="not empty"):
        loop.train(_config(out), progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_resume_without_checkpoint(tiny_data: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(BlendaeError, match="no checkpoint"):
        loop.train(_config(tmp_path / "none"), resume=True, progress=False)


def test_damaged_checkpoint(tiny_data: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "run"
    loop.train(_config(out, epochs=1), progress=False)
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(BlendaeError, match="damaged"):
        load_checkpoint(out)


def test_cosine_schedule_decays_to_one_percent() -> None:
    cfg = RunConfig(lr=1e-3, lr_schedule="cosine")
    assert loop.lr_at(cfg, 0, 100) == pytest.approx(1e-3)
    assert loop.lr_at(cfg, 100, 100) == pytest.approx(1e-5)
    assert loop.lr_at(RunConfig(lr=1e-3), 50, 100) == 1e-3


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("protocol", "fullbatch", "unknown protocol"),
        ("epochs", 0, "--epochs must be >= 1"),
        ("lr", -1.0, "--lr must be > 0"),
        ("device", "tpu", "unknown device"),
    ],
)
def test_config_validation(field: str, value: object, match: str) -> None:
    with pytest.raises(BlendaeError, match=match):
        RunConfig(**{field: value}).validate()  # type: ignore[arg-type]


def test_models_match_the_study() -> None:
    from blendae.models.registry import build_model

    seed = build_model("seed")
    convs = [m for m in seed.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [
        (3, 16),
        (16, 32),
        (32, 64),
        (64, 32),
        (32, 16),
        (16, 3),
    ]
    assert all(
        m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in convs
    )
    x = torch.zeros(2, 3, 32, 32)
    assert seed.encoder(x).shape == (2, 64, 4, 4)
    assert seed(x).shape == x.shape
    with pytest.raises(BlendaeError, match="unknown model"):
        build_model("nope")
    with pytest.raises(BlendaeError, match="unknown activation"):
        build_model("conv", activation="swish2")


def test_stop_hook_ends_the_run_at_that_step(tiny_data: SimpleNamespace, tmp_path: Path) -> None:
    asked: list[int] = []

    def stop(model: torch.nn.Module, step: int) -> bool:
        asked.append(step)
        return step == 9  # mid-way through epoch 2 (6 steps of 16 per epoch)

    metrics = loop.train(_config(tmp_path / "run", epochs=5), progress=False, stop=stop)
    assert asked == list(range(1, 10))
    assert [m["epoch"] for m in metrics] == [1]  # epoch 2 was cut short, so not recorded
