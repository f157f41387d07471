"""The training objective: distortion, plus λ-weighted rate for codec models.

Plain autoencoders train on the study's loss, the MSE in their input space. Codec models
train on the rate–distortion objective of Ballé et al. (2017) in CompressAI's convention,
λ·255²·MSE + bpp (the 255² puts λ on the pixel scale, so published λ values carry over).
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from blendae.errors import BlendaeError
from blendae.models import CompressionModel, bits_per_pixel


def check_objective(model: nn.Module, model_name: str, lmbda: float | None) -> None:
    """A codec model needs a λ and a plain model must not get one: refuse both mistakes."""
    codec = isinstance(model, CompressionModel)
    if codec and lmbda is None:
        raise BlendaeError(
            f"model {model_name!r} is a codec: give --lambda, the rate–distortion trade-off "
            "(e.g. 0.01; larger means higher quality and more bits)"
        )
    if not codec and lmbda is not None:
        raise BlendaeError(
            f"--lambda weighs a rate, but model {model_name!r} codes none; drop --lambda or "
            "choose a codec model (factorized)"
        )


def loss_fn(out: dict[str, Any], x: Tensor, lmbda: float | None) -> tuple[Tensor, dict[str, float]]:
    """The loss of one batch, and floats to log: `mse`, `bpp`, `psnr` when there is a rate."""
    mse = F.mse_loss(out["x_hat"].float(), x.float())
    if lmbda is None:
        return mse, {}
    b, _, h, w = x.shape
    bpp = bits_per_pixel(out["likelihoods"], b * h * w)
    mse_value = float(mse.detach())
    psnr = 10 * math.log10(1 / mse_value) if mse_value > 0 else float("inf")
    return lmbda * 255**2 * mse + bpp, {"mse": mse_value, "bpp": float(bpp.detach()), "psnr": psnr}
