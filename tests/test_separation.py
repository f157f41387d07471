"""Separation models: trained by the same loop on blends with both sources, measured per
source, consistent with their input by construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from blendae import runs
from blendae.config import RunConfig
from blendae.data import BlendedSplits, Sources
from blendae.errors import BlendaeError
from blendae.evaluation.report import evaluate_run
from blendae.models import build_model
from blendae.training import loop

SMALL = {"widths": [8, 16], "convs": 1}


@pytest.fixture
def blends_with_sources() -> BlendedSplits:
    """Random 'photos' blended with blocky gray 'digits', as the unit preset blends them."""
    g = torch.Generator().manual_seed(5)

    def split(n: int) -> tuple[torch.Tensor, Sources]:
        cifar = torch.rand(n, 3, 32, 32, generator=g)
        mnist = (torch.rand(n, 1, 8, 8, generator=g) > 0.7).float()
        mnist = torch.nn.functional.interpolate(mnist, size=32, mode="bilinear")
        return (cifar + mnist) / 2, Sources(cifar, mnist)

    (train, train_src), (test, test_src) = split(64), split(24)
    return BlendedSplits(train, test, "unit", {}, {"train": train_src, "test": test_src})


def test_a_separator_trains_and_reports_each_source(
    blends_with_sources: BlendedSplits, tmp_path: Path
) -> None:
    config = RunConfig(model="unet-sep", model_args=SMALL, preset="unit", epochs=2, batch_size=16)
    metrics = loop.train(config, tmp_path / "sep", blends_with_sources, progress=False)
    keys = {f"test_{m}_{k}" for m in ("psnr", "ssim", "loss") for k in ("cifar", "mnist")}
    assert all(
        keys <= set(m) and {"test_loss", "test_psnr", "test_ssim"} <= set(m) for m in metrics
    )
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]
    final = evaluate_run(tmp_path / "sep", blends_with_sources)
    assert final["test_psnr_cifar"] == pytest.approx(metrics[-1]["test_psnr_cifar"], rel=1e-5)
    summary = (tmp_path / "sep" / runs.SUMMARY).read_text()
    assert "CIFAR" in summary and "digit" in summary
    assert (tmp_path / "sep" / runs.RECONSTRUCTIONS).is_file()
    saved = json.loads((tmp_path / "sep" / runs.FINAL).read_text())
    assert saved["test_psnr_mnist"] == final["test_psnr_mnist"]


def test_the_estimates_average_back_to_the_input(blends_with_sources: BlendedSplits) -> None:
    """Within one gray level once both estimates are rounded to 8 bits, as PNGs store them."""
    torch.manual_seed(0)
    model = build_model("unet-sep", **SMALL).eval()
    x = blends_with_sources.test
    with torch.no_grad():
        sources = model(x)["sources"]
    cifar = (sources["cifar"] * 255).round()
    digit = (sources["mnist"] * 255).round()
    assert float(((cifar + digit) / 2 - x * 255).abs().max()) <= 1.0
    assert float(sources["mnist"].min()) >= 0 and float(sources["mnist"].max()) <= 1


def test_separators_refuse_other_spaces_and_missing_sources(
    blends_with_sources: BlendedSplits, tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    config = RunConfig(model="unet-sep", model_args=SMALL, preset="seed", epochs=1)
    with pytest.raises(BlendaeError, match="--preset unit"):
        loop.train(config, tmp_path / "a", blends_with_sources)
    config = RunConfig(model="unet-sep", model_args=SMALL, preset="unit", epochs=1)
    with pytest.raises(BlendaeError, match="sources"):
        loop.train(config, tmp_path / "b", tiny_splits)
