"""The training objectives: what a model is trained to do follows from what it is.

- Plain autoencoders train on the study's loss, the MSE in their input space.
- Codec models train on the rate–distortion objective of Ballé et al. (2017) in
  CompressAI's convention, λ·255²·MSE + bpp (the 255² puts λ on the pixel scale, so
  published λ values carry over).
- Separation models train on the mean of the two sources' MSEs (in [0, 1]).

A batch is a dict of tensors: "x", the blends, and for separation "cifar" and "mnist".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendae.errors import BlendaeError
from blendae.models import CompressionModel, SeparationModel, bits_per_pixel

Objective = Callable[[dict[str, Any], dict[str, Tensor]], tuple[Tensor, dict[str, float]]]


def reconstruction(out: dict[str, Any], batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
    return F.mse_loss(out["x_hat"].float(), batch["x"].float()), {}


def rate_distortion(
    out: dict[str, Any], batch: dict[str, Tensor], lmbda: float | None
) -> tuple[Tensor, dict[str, float]]:
    """λ·255²·MSE + bpp, and floats to log: `mse`, `bpp`, `psnr` (x in [0, 1]).

    A variable-rate model's training output carries a λ per image (`out["lmbda"]`): then
    each image's distortion is weighed by its own λ, against its own rate, and the image's
    loss by `out["weight"]` where the model gives one."""
    x = batch["x"]
    b, _, h, w = x.shape
    if "lmbda" in out:
        per_image = (out["x_hat"].float() - x.float()).square().mean(dim=(1, 2, 3))
        rates = sum(
            -torch.log2(lik.float()).flatten(1).sum(1) for lik in out["likelihoods"].values()
        )
        rates = rates / (h * w)
        losses = out["lmbda"] * 255**2 * per_image + rates
        loss = (losses * out["weight"] if "weight" in out else losses).mean()
        mse, bpp = per_image.mean(), rates.mean()
    else:
        mse = F.mse_loss(out["x_hat"].float(), x.float())
        bpp = bits_per_pixel(out["likelihoods"], b * h * w)
        loss = lmbda * 255**2 * mse + bpp
    mse_value = float(mse.detach())
    psnr = 10 * math.log10(1 / mse_value) if mse_value > 0 else float("inf")
    return loss, {"mse": mse_value, "bpp": float(bpp.detach()), "psnr": psnr}


def separation(out: dict[str, Any], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Mean of the per-source MSEs, and each of them to log."""
    losses = {k: F.mse_loss(out["sources"][k].float(), batch[k]) for k in ("cifar", "mnist")}
    stats = {f"mse_{k}": float(v.detach()) for k, v in losses.items()}
    return (losses["cifar"] + losses["mnist"]) / 2, stats


def objective_for(model: nn.Module, name: str, lmbda: float | None, preset: str) -> Objective:
    """The objective of `model`, refusing a λ it cannot use, a missing one, a wrong space."""
    if isinstance(model, CompressionModel) and model.variable_rate:
        if lmbda is not None:
            raise BlendaeError(
                f"model {name!r} learns every rate at once: drop --lambda and set its range "
                'in --model-args (e.g. {"lmbda": [0.002, 0.3]})'
            )
        return partial(rate_distortion, lmbda=None)
    if isinstance(model, CompressionModel):
        if lmbda is None:
            raise BlendaeError(
                f"model {name!r} is a codec: give --lambda, the rate–distortion trade-off "
                "(e.g. 0.01; larger means higher quality and more bits)"
            )
        return partial(rate_distortion, lmbda=lmbda)
    if lmbda is not None:
        raise BlendaeError(
            f"--lambda weighs a rate, but model {name!r} codes none; drop --lambda or "
            "choose a codec model (factorized)"
        )
    if isinstance(model, SeparationModel):
        if preset != model.preset:
            raise BlendaeError(
                f"separation model {name!r} works in the {model.preset!r} space: use "
                f"--preset {model.preset}"
            )
        return separation
    return reconstruction
