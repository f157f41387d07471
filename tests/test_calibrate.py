"""Calibrating the exact decoders' activation ranges (`models.calibrate`), and the shipped
general model, which is calibrated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blendae import codec as api
from blendae.codec.zoo import offered, zoo_entries
from blendae.models import build_model
from blendae.models.calibrate import calibrate
from blendae.models.exact import RangeTracker
from test_gained import SMALL, few_steps

OLDNEW = ("general-0.7", "general")


def wild_model() -> torch.nn.Module:
    """A tiny gained model after a few steps, whose last g_s range and context range a wild
    batch had blown up 64×, tables frozen."""
    model = few_steps()
    for net in (model.g_s, model.ctx):
        last = [m for m in net if isinstance(m, RangeTracker)][-1]
        last.amax.mul_(64)
    model.update()  # derives the exact networks from the blown-up ranges
    return model


def smooth_images(count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=32, mode="bilinear").clamp(0, 1)


def exact_float_gap(model: torch.nn.Module, x: torch.Tensor, quality: int) -> float:
    """Mean squared difference of the exact decoder's output from the float decoder's."""
    with torch.no_grad():
        exact = model(x, quality)["x_hat"]
        model._exact_current = False  # the float networks
        try:
            floating = model(x, quality)["x_hat"]
        finally:
            model._exact_current = True
    return float((exact - floating).square().mean())


def test_calibration_recovers_what_blown_up_ranges_cost_and_codes_as_it_decodes() -> None:
    model = wild_model()
    before = {k: float(v) for k, v in model.state_dict().items() if k.endswith("amax")}
    sets = (smooth_images(8, 0), torch.rand(8, 3, 32, 32))
    held_out = smooth_images(16, 4)
    gaps = [exact_float_gap(model, held_out, q) for q in (0, 100)]
    result = calibrate(model, [(x, q) for x in sets for q in (0, 100)])
    after = [exact_float_gap(model, held_out, q) for q in (0, 100)]
    assert all(a < g / 2 for a, g in zip(after, gaps, strict=True)), (after, gaps)
    assert result.psnr_after > result.psnr_before
    assert result.bits_after < result.bits_before  # the context's range was blown up too
    assert result.ranges["g_s.9.amax"] < before["g_s.9.amax"]
    assert set(result.ranges) == set(before)
    # the calibrated exact decoder is what coding uses: the decoded pixels are forward's
    x = smooth_images(4, 1)
    for quality in (0, 100):
        strings = model.compress(x, quality)
        decoded = model.decompress(strings, (32, 32), quality)
        with torch.no_grad():
            expected = model(x, quality)["x_hat"]
        assert torch.equal(decoded, expected)


def test_calibration_refuses_a_model_without_frozen_tables() -> None:
    model = build_model("gained", **SMALL).eval()
    with pytest.raises(ValueError, match="updated"):
        calibrate(model, [(torch.rand(2, 3, 32, 32), 50)])


def test_the_replaced_general_model_still_decodes_but_is_not_offered() -> None:
    kept = [name for name, meta in zoo_entries().items() if "superseded_by" in meta]
    assert kept == ["general-0.7"] and "general-0.7" not in offered()
    assert zoo_entries()["general"]["calibration"]["from"] == zoo_entries()["general-0.7"]["id"]
    images = list((smooth_images(8, 2) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    images = [np.ascontiguousarray(im) for im in images]
    old = api.compress_batch(images, "general-0.7", 80)
    new = api.compress_batch(images, "general", 80)
    assert old != new  # two models, two ids
    # each file finds its own model by its id, without --model
    for files in (old, new):
        decoded = api.decompress_batch(files)
        assert all(d.shape == (32, 32, 3) for d in decoded)


@pytest.mark.parametrize("quality", [63, 100])
def test_the_calibrated_general_model_decodes_closer_to_its_float_decoder(quality: int) -> None:
    """At high quality the old ranges cost the exact decoder most (0.75 dB on CIFAR-10 at
    quality 100); the calibrated model's exact pixels come closer to its float decoder's."""
    x = smooth_images(64, 3)
    gaps = {name: exact_float_gap(api.load_codec(name).model, x, quality) for name in OLDNEW}
    assert gaps["general"] < 0.75 * gaps["general-0.7"]
