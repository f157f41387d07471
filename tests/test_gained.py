"""The variable-rate codec (`gained`): a quality per image in training, exact coding at any
quality 0..100, files that record it, and the shipped general model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from blendae import codec as api
from blendae.codec import container
from blendae.codec.images import reconstruct
from blendae.codec.zoo import DEFAULT, zoo_entries
from blendae.errors import BlendaeError
from blendae.models import build_model
from blendae.training.losses import objective_for, rate_distortion

SMALL = {"N": 8, "M": 4, "Nh": 4, "Z": 2, "context": 8, "levels": 3, "lmbda": [0.01, 0.2]}


def few_steps() -> torch.nn.Module:
    """A tiny gained model after a few training steps, in eval mode, tables not frozen."""
    torch.manual_seed(0)
    model = build_model("gained", **SMALL)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = torch.rand(8, 3, 32, 32)
    model.train()
    for _ in range(3):
        loss, _ = rate_distortion(model(x), {"x": x}, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A tiny gained model after a few steps, with its tables frozen."""
    model = few_steps()
    model.update()
    return model


def test_training_draws_a_quality_per_image_and_weighs_each_by_its_lambda() -> None:
    torch.manual_seed(1)
    model = build_model("gained", **SMALL).train()
    x = torch.rand(6, 3, 32, 32)
    out = model(x)
    lmbda = out["lmbda"]
    assert lmbda.shape == (6,) and len(set(lmbda.tolist())) == 6
    assert bool(((lmbda >= 0.01) & (lmbda <= 0.2)).all())
    loss, stats = rate_distortion(out, {"x": x}, None)
    per_mse = (out["x_hat"] - x).square().mean(dim=(1, 2, 3))
    rates = sum(-torch.log2(v).flatten(1).sum(1) for v in out["likelihoods"].values()) / 1024
    assert torch.allclose(loss, (lmbda * 255**2 * per_mse + rates).mean())
    assert stats["bpp"] == pytest.approx(float(rates.detach().mean()), rel=1e-5)


def test_lambda_spacing_is_log_even_from_quality_0_to_100() -> None:
    model = build_model("gained", **SMALL)
    assert model.lmbda_at(0) == pytest.approx(0.01)
    assert model.lmbda_at(100) == pytest.approx(0.2)
    assert model.lmbda_at(50) == pytest.approx(math.sqrt(0.01 * 0.2))


def test_a_fixed_lambda_is_refused_for_the_variable_rate_model() -> None:
    model = build_model("gained", **SMALL)
    with pytest.raises(BlendaeError, match="drop --lambda"):
        objective_for(model, "gained", 0.05, "unit")


@pytest.mark.parametrize("bad", [{"levels": 1}, {"lmbda": [0.2, 0.1]}, {"quality": 101}])
def test_bad_arguments_are_clear_errors(bad: dict) -> None:
    with pytest.raises(BlendaeError, match="gained model"):
        build_model("gained", **{**SMALL, **bad})


@pytest.mark.parametrize("quality", [0, 37, 100])
def test_decoding_gives_the_evaluation_pass_bit_for_bit(trained, quality: int) -> None:
    x = torch.rand(3, 3, 32, 48)
    with torch.no_grad():
        strings = trained.compress(x, quality)
        decoded = trained.decompress(strings, (32, 48), quality)
        assert torch.equal(decoded, trained(x, quality)["x_hat"])


def test_a_higher_quality_spends_more_bits(trained) -> None:
    x = torch.rand(4, 3, 32, 32)
    sizes = [sum(len(s[0]) for s in trained.compress(x, q)) for q in (0, 50, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize("quality", [-1, 101, 2.5, True])
def test_a_quality_outside_0_to_100_is_refused(trained, quality) -> None:
    with pytest.raises(BlendaeError, match="quality"):
        trained.compress(torch.rand(1, 3, 32, 32), quality)


def test_the_gain_tables_are_saved_with_the_weights(trained) -> None:
    state = trained.state_dict()
    assert state["gain_table"].shape == (101, 4) and state["inv_gain_table"].dtype == torch.float32
    assert bool((state["gain_table"] > 0).all())
    again = build_model("gained", **SMALL)
    again.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    assert trained.compress(x, 64) == again.eval().compress(x, 64)


# ---- the quality in the container ---------------------------------------------------------


def test_the_quality_is_recorded_in_the_image_byte() -> None:
    fixed = container.pack(container.Header(b"abcd", 32, 32, 3), [b"xy"])
    assert fixed[2] == container.VERSION_COMPACT and len(fixed) == 9 + 2
    variable = container.pack(container.Header(b"abcd", 32, 32, 1, 66), [b"xy"])
    assert variable[5] == container.GRAY | 66 and len(variable) == len(fixed)
    assert container.unpack(variable)[0].quality == 66
    assert container.unpack(fixed)[0].quality is None


def test_a_truncated_version_3_header_is_a_clear_error() -> None:
    good = container.pack(container.Header(b"abcd", 32, 32, 3, 7), [b"xy"])
    for n in range(3, 9):
        with pytest.raises(BlendaeError, match="truncated"):
            container.unpack(good[:n])


# ---- the shipped general model ----------------------------------------------------------


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour waves: photo-like enough for the codec (random saturated blocks are
    not: every model here decodes those at about 14 dB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    out = []
    for k in range(n):
        a, b, c = rng.uniform(0.2, 0.8, 3)
        f = rng.uniform(1, 4)
        waves = [
            a + 0.2 * np.sin(3 * f * xx + k),
            b + 0.2 * np.cos(3 * f * yy),
            c + 0.15 * np.sin(2 * f * (xx + yy)),
        ]
        out.append((np.stack(waves, -1).clip(0, 1) * 255).round().astype(np.uint8))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * math.log10(255**2 / mse)


def test_the_default_model_is_the_general_one_at_its_recorded_quality() -> None:
    meta = zoo_entries()[DEFAULT]
    assert meta["model"] == "gained" and 0 <= meta["quality"] <= 100
    data = api.compress(images(1)[0])
    header, _ = container.unpack(data)
    assert header.quality == meta["quality"]
    assert container.made_by(header, bytes.fromhex(meta["id"]))


def test_the_general_model_round_trips_at_every_quality_with_more_bits_for_more_quality() -> None:
    batch = images(6)
    results = []
    for q in (0, 50, 100):
        files = api.compress_batch(batch, quality=q)
        decoded = api.decompress_batch(files)
        assert all(container.unpack(f)[0].quality == q for f in files)
        reconstructed = reconstruct(batch, quality=q)
        assert np.array_equal(np.stack(decoded), reconstructed)
        results.append((sum(map(len, files)), psnr(np.stack(batch), np.stack(decoded))))
    assert [r[0] for r in results] == sorted(r[0] for r in results)
    assert [r[1] for r in results] == sorted(r[1] for r in results)


def test_a_quality_is_refused_for_the_fixed_rate_blend_zoo_and_its_alias_works() -> None:
    with pytest.raises(BlendaeError, match="one fixed rate"):
        api.compress(images(1)[0], "blend-q3", quality=50)
    data = api.compress(images(1)[0], "blend-q3")
    assert data == api.compress(images(1)[0], "q3") and container.unpack(data)[0].quality is None
    assert api.decompress(data).shape == (32, 32, 3)


def test_the_general_models_json_names_what_trained_it() -> None:
    meta = zoo_entries()[DEFAULT]
    trained, resumed, calibrated = meta["commands"][-3:]
    assert "mix:" in trained and "--model gained" in trained and "--resume" in resumed
    assert calibrated.startswith("python scripts/calibrate_zoo.py general ")
    assert json.dumps(meta["data"]).count("fashion-mnist") >= 1


def test_balance_weighs_each_images_loss_by_a_power_of_its_lambda() -> None:
    torch.manual_seed(2)
    x = torch.rand(6, 3, 32, 32)
    assert "weight" not in build_model("gained", **SMALL).train()(x)
    torch.manual_seed(2)
    model = build_model("gained", **SMALL, balance=0.5).train()
    out = model(x)
    lmbda, weight = out["lmbda"], out["weight"]
    assert float(weight.mean()) == pytest.approx(1.0)
    assert torch.allclose(weight * lmbda.sqrt(), (weight * lmbda.sqrt())[0].expand(6))
    order = lmbda.argsort()
    assert bool((weight[order].diff() < 0).all())  # the low-λ images weigh more
    loss, _ = rate_distortion(out, {"x": x}, None)
    per_mse = (out["x_hat"] - x).square().mean(dim=(1, 2, 3))
    rates = sum(-torch.log2(v).flatten(1).sum(1) for v in out["likelihoods"].values()) / 1024
    assert torch.allclose(loss, (weight * (lmbda * 255**2 * per_mse + rates)).mean())


@pytest.mark.parametrize("bad", [{"balance": -0.1}, {"gain_lr": 0}, {"balance": math.inf}])
def test_bad_training_options_are_clear_errors(bad: dict) -> None:
    with pytest.raises(BlendaeError, match="balance >= 0 and gain_lr > 0"):
        build_model("gained", **{**SMALL, **bad})
