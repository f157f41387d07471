"""The factorized prior, quantization, integer tables and the RD loss."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from blendae.models.entropy import PRECISION, EntropyBottleneck, quantize
from blendae.models.factorized import FactorizedPrior
from blendae.models.layers import GDN
from blendae.training.losses import rate_distortion, reconstruction


def test_quantize_modes() -> None:
    x = torch.tensor([-1.6, -0.4, 0.5, 2.49])
    assert torch.equal(quantize(x, "dequantize"), torch.tensor([-2.0, -0.0, 0.0, 2.0]))
    assert quantize(x, "symbols").dtype == torch.int32
    noisy = quantize(x, "noise")
    assert (noisy - x).abs().max() <= 0.5
    with pytest.raises(ValueError, match="'round'"):
        quantize(x, "round")


def test_tables_needed_before_coding() -> None:
    eb = EntropyBottleneck(4)
    with pytest.raises(RuntimeError, match=r"run update\(\) first"):
        eb.compress(torch.zeros(1, 4, 2, 2))
    with pytest.raises(RuntimeError, match=r"run update\(\) first"):
        eb.decompress([b""], (2, 2))
    with pytest.raises(RuntimeError, match=r"run update\(\) first"):
        eb.coder_probabilities()


def test_update_makes_exact_integer_tables_that_survive_saving(tmp_path) -> None:
    torch.manual_seed(0)
    model = FactorizedPrior(N=8, M=4)
    model.update()
    pmf = model.entropy_bottleneck._pmf
    assert pmf.dtype == torch.int32 and pmf.shape[0] == 4
    assert bool((pmf >= 1).all()) and bool((pmf.long().sum(dim=1) == 1 << PRECISION).all())
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    fresh = FactorizedPrior(N=8, M=4)
    assert not fresh.entropy_bottleneck.is_updated
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(fresh.entropy_bottleneck._pmf, pmf)
    assert torch.equal(fresh.entropy_bottleneck._offset, model.entropy_bottleneck._offset)


def test_coder_uses_the_integer_tables_exactly() -> None:
    """n copies of a symbol cost n·log2(2^24 / pmf) bits: constriction adds no rounding."""
    pmf = np.array([(1 << PRECISION) - 1 - 3 - 5, 1, 3, 5], dtype=np.int64)
    probs = (pmf - 1).astype(np.float32)[None].repeat(4000, axis=0)
    family = constriction.stream.model.Categorical(perfect=False)
    for symbol in (1, 2, 3):  # (symbol 0 on an empty ANS stack is free: left cdf 0, state 0)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.full(4000, symbol, np.int32), family, probs)
        expected = 4000 * (PRECISION - math.log2(pmf[symbol]))
        assert abs(coder.num_valid_bits() - expected) < 64, (symbol, coder.num_valid_bits())


def test_forward_outputs_and_eval_clamps_to_the_tables() -> None:
    torch.manual_seed(0)
    model = FactorizedPrior(N=8, M=4)
    x = torch.rand(2, 3, 16, 12)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, 4, 4, 3)
    model.update()
    model.eval()
    eb = model.entropy_bottleneck
    y = torch.full((1, 4, 1, 1), 1e4)
    y_hat, _ = eb(y)
    assert torch.equal(y_hat, eb.decompress(eb.compress(y), (1, 1)))


def test_gdn_normalizes_and_igdn_rescales() -> None:
    x = torch.randn(2, 3, 4, 4)
    gdn, igdn = GDN(3), GDN(3, inverse=True)
    with torch.no_grad():  # γ = 0, β = 1: both are the identity
        for m in (gdn, igdn):
            m.gamma_sqrt.zero_()
    assert torch.allclose(gdn(x), x, atol=1e-5) and torch.allclose(igdn(x), x, atol=1e-5)
    with torch.no_grad():  # γ = I, β = 1: x / sqrt(1 + x²) and x · sqrt(1 + x²), channel-wise
        for m in (gdn, igdn):
            m.gamma_sqrt.copy_(torch.eye(3))
    assert torch.allclose(gdn(x), x / torch.sqrt(1 + x * x), atol=1e-5)
    assert torch.allclose(igdn(x), x * torch.sqrt(1 + x * x), atol=1e-5)


def test_rate_distortion_loss() -> None:
    x = torch.zeros(2, 3, 4, 4)
    out = {"x_hat": torch.full_like(x, 0.1), "likelihoods": {"y": torch.full((2, 1, 2, 2), 0.5)}}
    loss, stats = rate_distortion(out, {"x": x}, 0.01)
    assert stats["bpp"] == pytest.approx(8 / 32)
    assert stats["mse"] == pytest.approx(0.01)
    assert float(loss) == pytest.approx(0.01 * 255**2 * 0.01 + 8 / 32, rel=1e-5)
    assert stats["psnr"] == pytest.approx(20.0)
    # Without λ (plain autoencoders, no latents) the loss is the study's MSE alone.
    loss, stats = reconstruction({"x_hat": out["x_hat"], "likelihoods": {}}, {"x": x})
    assert float(loss) == pytest.approx(0.01) and stats == {}


def test_per_channel_coding_equals_one_lazy_call() -> None:
    """blendae codes channel by channel; the words match one lazy call over all symbols."""
    torch.manual_seed(0)
    model = FactorizedPrior(N=8, M=4)
    model.update()
    model.eval()
    eb = model.entropy_bottleneck
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, 16, 16))
    (data,) = eb.compress(y)
    symbols = eb.indices(y)[0].numpy()  # (M, 4, 4)
    rows = np.repeat(eb.coder_probabilities(), 16, axis=0)  # (M·4·4, L)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(
        symbols.reshape(-1), constriction.stream.model.Categorical(perfect=False), rows
    )
    words = coder.get_compressed().astype("<u4").tobytes()
    assert words.startswith(data) and set(words[len(data) :]) <= {0}  # trailing zeros dropped
    assert torch.equal(eb.decompress([data], (4, 4)), eb.dequantize(eb.indices(y)))
