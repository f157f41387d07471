"""The rate–distortion objective of Ballé et al. (2017): λ·255²·MSE + bits per pixel."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bits_per_pixel(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated rate: −Σ log2 p over every latent, divided by the number of image pixels."""
    total = sum(torch.log(lik).sum() for lik in likelihoods.values())
    return -total / (math.log(2) * num_pixels)


def rate_distortion_loss(
    out: dict[str, Tensor | dict[str, Tensor]], x: Tensor, lmbda: float
) -> tuple[Tensor, dict[str, float]]:
    """Loss = lmbda · 255² · MSE(x, x_hat) + bpp, with x in [0, 1] (the `unit` preset).

    The 255² puts λ on the pixel scale as in CompressAI, so published λ values carry over.
    Returns the loss and floats `mse` (training space), `bpp` and `psnr` (from this MSE).
    """
    x_hat = out["x_hat"]
    likelihoods = out["likelihoods"]
    assert isinstance(x_hat, Tensor) and isinstance(likelihoods, dict)
    b, _, h, w = x.shape
    mse = torch.mean((x_hat.float() - x.float()) ** 2)
    bpp = bits_per_pixel(likelihoods, b * h * w)
    loss = lmbda * 255**2 * mse + bpp
    mse_value = float(mse.detach())
    psnr = 10 * math.log10(1 / mse_value) if mse_value > 0 else float("inf")
    return loss, {"mse": mse_value, "bpp": float(bpp.detach()), "psnr": psnr}
