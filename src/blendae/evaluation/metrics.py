"""Quality in pixel space (0–255): PSNR, SSIM and rate of reconstructions and separations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pytorch_msssim import ssim as _ssim
from torch import Tensor, nn

from blendae.config import RunConfig
from blendae.data import Space, to_pixels
from blendae.models import SeparationModel, bits_per_pixel


def psnr_per_image(x: Tensor, x_hat: Tensor, data_range: float = 255.0) -> Tensor:
    """PSNR in dB of each image (N,C,H,W); identical images give +inf."""
    mse = (x.double() - x_hat.double()).pow(2).flatten(1).mean(dim=1)  # (N,)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(x: Tensor, x_hat: Tensor, data_range: float = 255.0) -> Tensor:
    """Mean SSIM over the batch (Gaussian window 11, σ 1.5, per channel, as in Wang et al. 2004)."""
    return _ssim(x.float(), x_hat.float(), data_range=data_range, size_average=False)


@torch.no_grad()
def evaluate(
    reconstruct: Callable[[Tensor], Any],
    x_test: Tensor,
    to_pixels: Callable[[Tensor], Tensor],
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Test loss in the training space and PSNR/SSIM in pixel space over a test set.

    `reconstruct` follows the model contract (`blendae.models.base`). `test_loss` is the mean
    squared error over all values (the study's loss); PSNR is the mean of per-image PSNRs
    with reconstructions clamped to [0, 255]; SSIM is the mean per-image SSIM on the same
    pixels. A model with latents also gives `test_bpp`, the rate its entropy model estimates.
    """
    sq_sum, psnr_sum, ssim_sum, n = 0.0, 0.0, 0.0, 0
    rate_sum, has_rate = 0.0, False
    for start in range(0, len(x_test), batch_size):
        x = x_test[start : start + batch_size].to(device, non_blocking=True)
        out = reconstruct(x)
        if out["likelihoods"]:
            has_rate = True
            rate_sum += bits_per_pixel(out["likelihoods"], x.shape[-2] * x.shape[-1]).item()
        x_hat = out["x_hat"].float()
        sq_sum += (x_hat - x).pow(2).sum().item()
        p, p_hat = to_pixels(x).cpu(), to_pixels(x_hat).clamp(0, 255).cpu()
        psnr_sum += psnr_per_image(p, p_hat).clamp(max=100.0).sum().item()
        ssim_sum += ssim(p, p_hat).sum().item()
        n += len(x)
    result = {
        "test_loss": sq_sum / x_test.numel(),
        "test_psnr": psnr_sum / n,
        "test_ssim": ssim_sum / n,
    }
    if has_rate:
        result["test_bpp"] = rate_sum / n
    return result


@torch.no_grad()
def evaluate_separation(
    separate: Callable[[Tensor], Any],
    test: dict[str, Tensor],
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Per-source test loss (MSE in [0, 1]), PSNR and SSIM (pixel space, estimates clamped
    to [0, 255]) of a separation model; `test` holds "x", "cifar" and "mnist".

    `test_loss`, `test_psnr` and `test_ssim` are the means over the two sources, so every
    run's metrics.jsonl has the same keys.
    """
    sums = {f"{m}_{k}": 0.0 for m in ("sq", "psnr", "ssim") for k in ("cifar", "mnist")}
    n = len(test["x"])
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size].to(device) for k, v in test.items()}
        estimates = separate(batch["x"])["sources"]
        for k in ("cifar", "mnist"):
            truth, estimate = batch[k].float(), estimates[k].float()
            sums[f"sq_{k}"] += (estimate - truth).pow(2).sum().item()
            p, p_hat = (truth * 255).cpu(), (estimate * 255).clamp(0, 255).cpu()
            sums[f"psnr_{k}"] += psnr_per_image(p, p_hat).clamp(max=100.0).sum().item()
            sums[f"ssim_{k}"] += ssim(p, p_hat).sum().item()
    result = {}
    for k in ("cifar", "mnist"):
        result[f"test_loss_{k}"] = sums[f"sq_{k}"] / test[k].numel()
        result[f"test_psnr_{k}"] = sums[f"psnr_{k}"] / n
        result[f"test_ssim_{k}"] = sums[f"ssim_{k}"] / n
    for m in ("loss", "psnr", "ssim"):
        result[f"test_{m}"] = (result[f"test_{m}_cifar"] + result[f"test_{m}_mnist"]) / 2
    return result


def measure(
    model: nn.Module,
    test: dict[str, Tensor],
    config: RunConfig,
    space: Space | str,
    memory_format: torch.memory_format,
    device: torch.device,
) -> dict[str, float]:
    """A model's test metrics in float32 (per source for separation models)."""
    run = lambda x: model(x.contiguous(memory_format=memory_format))  # noqa: E731
    if isinstance(model, SeparationModel):
        return evaluate_separation(run, test, config.eval_batch_size, device)
    pixels = lambda x: to_pixels(x, space)  # noqa: E731
    return evaluate(run, test["x"], pixels, config.eval_batch_size, device)


def separation_scores(
    cifar_u8: Tensor, digit_u8: Tensor, truth: dict[str, Tensor]
) -> dict[str, float]:
    """Per-source scores of 8-bit estimates, as `blendae separate` writes them: CIFAR
    (N, 3, H, W) and digits (N, 1, H, W) uint8 against the float sources in [0, 1].

    `psnr_*`: PSNR of the set's mean squared error (pixel space); `psnr_*_per_image`: the
    mean of per-image PSNRs; `ssim_*`: mean SSIM. Digits are scored on their one channel.
    """
    scores = {}
    for key, estimate in (("cifar", cifar_u8), ("mnist", digit_u8)):
        p, p_hat = (truth[key] * 255).double(), estimate.double()
        mse = float((p_hat - p).pow(2).mean())
        scores[f"psnr_{key}"] = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
        per_image = psnr_per_image(p, p_hat).clamp(max=100.0)
        scores[f"psnr_{key}_per_image"] = float(per_image.mean())
        scores[f"ssim_{key}"] = float(ssim(p, p_hat).mean())
    return scores
