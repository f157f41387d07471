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


@pytest.fixture
def separator_run(tmp_path: Path) -> str:
    """A run folder holding a small (untrained) separation model."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path / "sep-run"
    folder.mkdir()
    save_file(build_model("unet-sep", **SMALL).state_dict(), folder / runs.WEIGHTS)
    runs.save_config(folder, RunConfig(model="unet-sep", model_args=SMALL, preset="unit"))
    return str(folder)


def test_separate_writes_both_sources_safely(separator_run: str, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from conftest import blendae, snapshot

    rng = np.random.default_rng(0)
    mixes = tmp_path / "mixes"
    mixes.mkdir()
    for name in ("a", "b"):
        photo = rng.integers(0, 256, (32, 32, 3))
        digit = rng.integers(0, 256, (32, 32, 1))  # gray: a blend's second image
        mix = np.round((photo + digit) / 2).astype(np.uint8)
        Image.fromarray(mix).save(mixes / f"{name}.png")
    rc, out, err = blendae("separate", mixes, "-o", tmp_path / "parts", "--model", separator_run)
    assert rc == 0 and len(out) == 4 and err == ["blendae: 2 images separated into 4 files"]
    for name in ("a", "b"):
        mix = np.asarray(Image.open(mixes / f"{name}.png")).astype(int)
        cifar = np.asarray(Image.open(tmp_path / "parts" / f"{name}.cifar.png")).astype(int)
        digit = np.asarray(Image.open(tmp_path / "parts" / f"{name}.mnist.png")).astype(int)
        assert cifar.shape == (32, 32, 3) and digit.shape == (32, 32)
        assert np.abs((cifar + digit[..., None]) / 2 - mix).max() <= 1  # one gray level
    before = snapshot(tmp_path)
    rc, _, err = blendae("separate", mixes, "-o", tmp_path / "parts", "--model", separator_run)
    assert rc == 2 and len(err) == 1 and "already exists; use --force" in err[0]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "small.png")
    rc, _, err = blendae("separate", tmp_path / "small.png", "-o", tmp_path / "x")
    assert rc == 2 and len(err) == 1 and "28x28" in err[0] and "32x32" in err[0]
    assert snapshot(tmp_path) == {**before, "small.png": snapshot(tmp_path)["small.png"]}


@pytest.mark.mirror
def test_the_cli_gives_the_benchmarks_numbers(tmp_path: Path) -> None:
    """8-bit PNG blends made from the raw test files, separated by `blendae separate`,
    score within 0.3 dB of the benchmark's in-memory path (shipped model, 300 images)."""
    import os

    import numpy as np
    from PIL import Image

    from blendae.data import load_blended
    from blendae.evaluation.metrics import separation_scores
    from blendae.separate import load_separator, separate_tensors
    from conftest import blendae

    splits = load_blended("unit", mirror=os.environ["BLENDAE_MIRROR"], progress=False, sources=True)
    assert splits.sources is not None
    n = 300
    x, src = splits.test[:n], splits.sources["test"]
    truth = {"cifar": src.cifar[:n], "mnist": src.mnist[:n]}
    bench = separation_scores(*separate_tensors(load_separator(), x), truth)  # the benchmark's
    as_u8 = lambda t: (t * 255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    (tmp_path / "mix").mkdir()
    for i, image in enumerate(as_u8(x).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(tmp_path / "mix" / f"{i:04d}.png")
    rc, _, _ = blendae("separate", tmp_path / "mix", "-o", tmp_path / "out")
    assert rc == 0
    read = lambda suffix: np.stack(  # noqa: E731
        [np.asarray(Image.open(tmp_path / "out" / f"{i:04d}{suffix}")) for i in range(n)]
    )
    cifar = torch.from_numpy(read(".cifar.png")).permute(0, 3, 1, 2)
    digits = torch.from_numpy(read(".mnist.png"))[:, None]
    cli = separation_scores(cifar, digits, truth)
    for key in ("psnr_cifar", "psnr_mnist"):
        assert abs(cli[key] - bench[key]) <= 0.3, (key, cli[key], bench[key])
    assert min(bench["psnr_cifar"], bench["psnr_mnist"]) > 25  # it separates (baseline: 12)
