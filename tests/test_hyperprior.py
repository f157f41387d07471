"""The mean–scale hyperprior codec: Gaussian tables, exact decoders, coding, tiling."""

from __future__ import annotations

import constriction
import numpy as np
import pytest
import torch
from torch import nn

from blendae.errors import BlendaeError
from blendae.models import build_model
from blendae.models.entropy import PRECISION, coder_bytes, open_coder
from blendae.models.exact import MAX_FAN_IN, ExactSequential, RangeTracker
from blendae.models.gaussian import NUM_SCALES, GaussianConditional, scale_table
from blendae.models.hyperprior import MeanScaleHyperprior
from blendae.models.layers import GDN
from conftest import holding


def _trained(steps: int = 20, seed: int = 0, context: int = 0) -> MeanScaleHyperprior:
    """A small hyperprior after a few steps on smooth random images, updated."""
    torch.manual_seed(seed)
    model = MeanScaleHyperprior(N=16, M=8, Nh=8, Z=4, context=context)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8), size=32, mode="bilinear")
    for _ in range(steps):
        out = model(x)
        mse = (out["x_hat"] - x).pow(2).mean()
        bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
        loss = 0.01 * 255**2 * mse + bits / x[:, 0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.update()
    return model


@pytest.fixture(scope="module", params=[0, 16], ids=["plain", "context"])
def model(request: pytest.FixtureRequest) -> MeanScaleHyperprior:
    return _trained(context=request.param)


def _images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(small, size=size, mode="bilinear")


def test_gaussian_tables_are_exact_integers_with_the_full_mass() -> None:
    gc = GaussianConditional()
    gc.update()
    radius = gc._radius.long()
    assert gc._pmf.shape[0] == NUM_SCALES
    for row, r in zip(gc._pmf.long(), radius.tolist(), strict=True):
        assert int(row[: 2 * r + 1].sum()) == 1 << PRECISION
        assert bool((row[: 2 * r + 1] >= 1).all()) and int(row[2 * r + 1 :].abs().sum()) == 0
    # A wider σ gets a wider, flatter table.
    assert radius[-1] > radius[0] and gc._pmf[-1].max() < gc._pmf[0].max()
    # Thresholds sit between neighbouring scales: every table scale selects its own entry.
    assert torch.equal(gc.indices(scale_table()), torch.arange(NUM_SCALES))


def test_gaussian_coding_round_trips_every_value_with_escapes() -> None:
    gc = GaussianConditional()
    gc.update()
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(3, 4, 5, 6, generator=g) * 10
    mean = torch.randn(3, 4, 5, 6, generator=g)
    y = mean + torch.randn(3, 4, 5, 6, generator=g) * scale
    y[0, 0, 0, 0] = 1e4  # far outside its table: the edge symbol plus an escape
    y[0, 0, 0, 1] = -3e9  # beyond the latent limit: capped
    indices = gc.indices(scale)
    symbols = gc.symbols(y, mean)
    radius = gc._radius.long()[indices.long()]
    assert bool((symbols.abs() > radius).any())
    assert symbols[0, 0, 0, 1] == -(2**16)
    symbols, indices = symbols.flatten(1).numpy(), indices.flatten(1).numpy()
    coders = [constriction.stream.stack.AnsCoder() for _ in range(len(symbols))]
    gc.encode_batch(coders, symbols, indices)
    decoders = [open_coder(coder_bytes(coder)) for coder in coders]
    assert np.array_equal(gc.decode_batch(decoders, indices), symbols)
    assert all(decoder.is_empty() for decoder in decoders)


@pytest.mark.parametrize("nonzero", [0, 1, 23, 24, 25, 50, 300])
def test_values_with_their_signs_apart_round_trip(nonzero: int) -> None:
    """Magnitudes through the folded tables (with escapes) and the signs as raw bits."""
    gc = GaussianConditional()
    gc.update()
    rng = np.random.default_rng(nonzero)
    indices = rng.integers(0, NUM_SCALES, size=(3, 400))
    symbols = np.zeros((3, 400), dtype=np.int32)
    for row in symbols:
        where = rng.choice(400, size=nonzero, replace=False)
        row[where] = rng.integers(1, 40, size=nonzero) * rng.choice([-1, 1], size=nonzero)
    symbols[0, :2] = [-5000, 2**16]  # escapes beyond any table
    coders = [constriction.stream.stack.AnsCoder() for _ in range(3)]
    gc.encode_signs(coders, symbols)
    gc.encode_batch(coders, symbols, indices, folded=True)
    decoders = [open_coder(coder_bytes(coder)) for coder in coders]
    magnitudes = gc.decode_batch(decoders, indices, folded=True)
    assert np.array_equal(magnitudes, np.abs(symbols))
    assert np.array_equal(gc.decode_signs(decoders, magnitudes), symbols)
    assert all(decoder.is_empty() for decoder in decoders)


def test_raw_signs_first_save_the_coders_start_up_bits() -> None:
    """The ANS coder's first symbol costs ~24 bits whatever it carries: 24 raw sign bits
    there save about 22 bits per string against coding the same values with signs."""
    gc = GaussianConditional()
    gc.update()
    rng = np.random.default_rng(0)
    indices = np.full((50, 512), 20)  # σ ≈ 0.7: mostly 0 and ±1
    symbols = np.round(rng.normal(0, 0.8, size=(50, 512))).astype(np.int32)
    sizes = {}
    for apart in (False, True):
        coders = [constriction.stream.stack.AnsCoder() for _ in range(50)]
        if apart:
            gc.encode_signs(coders, symbols)
        gc.encode_batch(coders, symbols, indices, folded=apart)
        sizes[apart] = np.mean([len(coder_bytes(coder)) for coder in coders])
    assert sizes[False] - sizes[True] > 2  # bytes per string


def test_float32_table_choice_equals_the_float64_comparison() -> None:
    """σ's entry (a guess from log σ, settled by comparisons with float32 thresholds rounded
    up) is the one comparing in float64 picks, also for σ at, just below and just above
    every threshold, and over many octaves."""
    gc = GaussianConditional()
    t = gc.thresholds.float()
    near = [t, torch.nextafter(t, torch.zeros(())), torch.nextafter(t, torch.full((), 99.0))]
    extremes = torch.tensor([0.0, -1.0, 1e-30, float("inf")])
    spread = torch.exp(torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 4)
    scale = torch.cat([*near, torch.rand(10_000) * 60, spread, extremes])
    float64 = torch.bucketize(scale.double(), gc.thresholds, right=True)
    assert torch.equal(gc.indices(scale), float64)


@pytest.mark.parametrize("overflow", [0, 1, 2, 3, 1000, 2**16 - 400])
def test_an_escape_codes_any_overflow_exactly(overflow: int) -> None:
    gc = GaussianConditional()
    gc.update()
    indices = np.array([0, 5, 5, 63], dtype=np.int32)
    edge = [int(gc._radius[k]) for k in indices]
    values = np.array([edge[0] + overflow, -edge[1] - overflow, 1, -edge[3]], dtype=np.int32)
    coder = constriction.stream.stack.AnsCoder()
    gc.encode_batch([coder], values[None], indices[None])
    decoder = open_coder(coder_bytes(coder))
    assert np.array_equal(gc.decode_batch([decoder], indices[None])[0], values)
    assert decoder.is_empty()


def _tracked_net() -> nn.Sequential:
    return nn.Sequential(
        RangeTracker(),
        nn.Conv2d(8, 16, 3, padding=1),
        RangeTracker(),
        GDN(16, inverse=True),
        RangeTracker(),
        nn.Conv2d(16, 4 * 16, 3, padding=1),
        nn.PixelShuffle(2),
        nn.ReLU(),
        RangeTracker(),
        nn.Conv2d(16, 3, 3, padding=1),
    )


def test_exact_network_is_close_to_the_float_one_and_independent_of_batching() -> None:
    torch.manual_seed(0)
    net = _tracked_net()
    x = torch.randn(32, 8, 8, 8) * 3
    net.train()(x)  # the trackers record the activation ranges
    exact = ExactSequential.from_float(net.eval())
    with torch.no_grad():
        ref = net(x)
        out = exact(x)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 1e-2 * ref.abs().max()
    # Same bits whatever else is in the batch and however many threads sum the products.
    alone = torch.cat([exact(x[i : i + 1]) for i in range(4)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = exact(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, out[:4]) and torch.equal(one_thread, out)


def test_exact_conversion_refuses_what_it_cannot_make_exact() -> None:
    with pytest.raises(ValueError, match="no RangeTracker"):
        ExactSequential.from_float(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(ValueError, match="no exact version of GELU"):
        ExactSequential.from_float(nn.Sequential(nn.GELU()))
    with pytest.raises(ValueError, match="fan-in"):
        ExactSequential.from_float(nn.Sequential(RangeTracker(), nn.Conv2d(200, 3, 3)))
    with pytest.raises(BlendaeError, match="bad hyperprior shape"):
        build_model("hyperprior", N=200)


def test_decoding_equals_the_evaluation_forward_pass_bit_for_bit(
    model: MeanScaleHyperprior,
) -> None:
    x = _images(6)
    with torch.inference_mode():
        strings = model.compress(x)
        decoded = model.decompress(strings, (32, 32))
        forward = model(x)["x_hat"]
        # The float networks, which the exact ones stand in for:
        y = model.g_a(x)
        hs = model.h_s(torch.round(model.h_a(y)))
        y_hat, _, _ = model._mean_scale(y, hs, lambda v, m: torch.round(v - m) + m, exact=False)
        float_decoded = model.g_s(y_hat)
    assert all(len(s) == 1 for s in strings)  # z and y share one ANS stream
    assert torch.equal(decoded, forward)
    assert (decoded - float_decoded).abs().mean() < 1e-3


def test_tiled_coding_gives_the_same_bytes_and_pixels(
    model: MeanScaleHyperprior, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _images(1, size=96, seed=3)
    with torch.inference_mode():
        strings = model.compress(x)
        decoded = model.decompress(strings, (96, 96))
        monkeypatch.setattr(model, "tile_above", 0)
        monkeypatch.setattr(model, "tile", 32)
        assert model.compress(x) == strings
        assert torch.equal(model.decompress(strings, (96, 96)), decoded)


def test_damaged_strings_are_errors_not_crashes(model: MeanScaleHyperprior) -> None:
    with torch.inference_mode():
        ((data,),) = model.compress(_images(1))
        with pytest.raises(BlendaeError, match=r"corrupt \.bae payload: data left over"):
            model.decompress([[b"\x07" * 8 + data]], (32, 32))  # below the stack
        for cut in (1, len(data) // 2, len(data) - 4):
            damaged = bytes([data[cut] ^ 0xFF]) if cut == 1 else b""
            try:
                out = model.decompress([[damaged + data[cut:]]], (32, 32))
            except BlendaeError:
                continue
            assert out.shape == (1, 3, 32, 32) and bool(torch.isfinite(out).all())


def test_tables_and_exact_decoders_survive_saving(model: MeanScaleHyperprior) -> None:
    clone = MeanScaleHyperprior(N=16, M=8, Nh=8, Z=4, context=model.context)
    assert not clone.is_updated
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = _images(2, seed=5)
    with torch.inference_mode():
        strings = model.compress(x)
        assert clone.compress(x) == strings
        assert torch.equal(clone.decompress(strings, (32, 32)), model.decompress(strings, (32, 32)))


def test_the_side_information_is_a_small_share_of_the_rate(model: MeanScaleHyperprior) -> None:
    with torch.inference_mode():
        likelihoods = model(_images(8, seed=7))["likelihoods"]
    bits = {k: float(-torch.log2(v).sum()) for k, v in likelihoods.items()}
    assert 0 < bits["z"] < bits["y"]


def test_a_context_model_started_from_a_trained_one_decodes_like_it() -> None:
    """The context's last layer starts at zero: fine-tuning starts from the given model."""
    base = _trained(context=0)
    extended = MeanScaleHyperprior(N=16, M=8, Nh=8, Z=4, context=16)
    missing = extended.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("ctx.", "ep.")) for k in missing)
    extended.eval()
    extended.update()
    x = _images(4, seed=9)
    with torch.inference_mode():
        strings = extended.compress(x)
        assert strings != base.compress(x)  # the anchors and the rest are coded apart
        assert torch.equal(extended.decompress(strings, (32, 32)), base(x)["x_hat"])


def test_a_bad_context_width_is_refused() -> None:
    with pytest.raises(BlendaeError, match="bad context width"):
        build_model("hyperprior", context=-1)
    with pytest.raises(BlendaeError, match="bad context width"):
        build_model("hyperprior", context=MAX_FAN_IN + 1)


def _one_signed_conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    """A conv whose weights all have one sign: its sums grow as fast as they can."""
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    with torch.no_grad():
        conv.weight.abs_()
    return conv


@pytest.mark.parametrize("k", [1, 3])
def test_the_one_kernel_path_gives_the_two_digit_bits_and_is_taken_only_where_exact(
    k: int,
) -> None:
    from blendae.models.exact import ExactConv, _quantize

    layer = ExactConv(_one_signed_conv(64, 48, k), step=6 / 2047)  # activations of ±3

    def two_digits(x: torch.Tensor) -> torch.Tensor:  # what 0.3–0.9 computed, always
        return layer._digits(_quantize(x, layer.step)).mul_(layer.scale).add_(layer.bias)

    g = torch.Generator().manual_seed(1)
    small = torch.rand(6, 64, 8, 8, generator=g) * 0.02  # of one sign too
    large = torch.rand(6, 64, 8, 8, generator=g) * 3
    with torch.no_grad():
        assert layer.fits(_quantize(small, layer.step))
        assert not layer.fits(_quantize(large, layer.step))
        # Beyond `room` one kernel's float32 sums round: the guard is what keeps the bits.
        a = _quantize(large, layer.step)
        assert not torch.equal(layer._whole(a), layer._digits(a))
        mixed = torch.cat([large[:2], small[:3], large[2:3]])  # one large image: two digits
        for x in (small, large, mixed):
            x = x.contiguous(memory_format=torch.channels_last)
            assert torch.equal(layer(x), two_digits(x))
        assert torch.equal(layer(mixed)[2:5], layer(small[:3]))  # either path, the same bits
        # Right at the bound: one position holds `room` in 12-bit activations, so every
        # window over it sums to `room`, against weights of one sign.
        a = holding((4, 4, layer.room))
        assert layer.fits(a)
        assert torch.equal(layer._whole(a), layer._digits(a))
        assert not layer.fits(holding((4, 4, layer.room + 1)))
        if k > 1:  # each position within `room`, the windows over both beyond it
            half = layer.room // 2 + 1
            assert layer.fits(holding((4, 4, half)))
            assert not layer.fits(holding((4, 4, half), (4, 5, half)))


def test_numpy_s_float32_root_is_the_float64_root_rounded() -> None:
    """The exact GDN's root since 0.10 (numpy's float32 sqrt) is 0.3–0.9's (the float64
    root rounded to float32) on 4 million float32 bit patterns across the finite range."""
    bits = np.random.default_rng(0).integers(0, 0x7F800000, 4_000_000, dtype=np.uint32)
    x = bits.view(np.float32)
    assert np.array_equal(np.sqrt(x), np.sqrt(x.astype(np.float64)).astype(np.float32))


def test_table_entries_are_the_thresholds_count_in_numpy_and_torch() -> None:
    """The torch-free decoder's `ans.entries` and torch's `indices` guess from log σ and
    correct by one: both must give the number of thresholds ≤ σ (a binary search) for any
    float32, next to every threshold above all, where a wrong entry would misparse."""
    from blendae.ans import entries
    from blendae.models.gaussian import GaussianConditional

    thresholds = GaussianConditional().thresholds.double().numpy()
    rng = np.random.default_rng(0)
    edges = [thresholds.astype(np.float32)]
    for direction in (np.inf, -np.inf):
        near = edges[0]
        for _ in range(4):
            near = np.nextafter(near, np.float32(direction))
            edges.append(near)
    special = [0, -0.0, -1, np.nan, np.inf, -np.inf, np.finfo(np.float32).max, 1e-45]
    sigma = np.concatenate([np.exp(rng.uniform(-12, 12, 200_000)), special, *edges]).astype(
        np.float32
    )
    want = np.searchsorted(thresholds, np.nan_to_num(sigma, nan=0.0).astype(np.float64), "right")
    assert np.array_equal(entries(sigma, thresholds), want)
    gc = GaussianConditional()
    assert np.array_equal(gc.indices(torch.from_numpy(sigma)).numpy(), want)
