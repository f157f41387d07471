"""Figures: the study's loss curves, and grids of test images with what a model made of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from blendae.data import Space, to_pixels
from blendae.files import atomic_write
from blendae.models import SeparationModel


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_losses(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train and test loss per epoch, as in the study's figure.

    The y axis turns logarithmic when the losses span more than 10×, as mini-batch runs'
    do: on a linear axis everything after the first few epochs would sit on the floor.
    """
    epochs = [m["epoch"] for m in metrics]
    losses = [m[k] for m in metrics for k in ("train_loss", "test_loss")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_loss"] for m in metrics], label="train loss")
    ax.plot(epochs, [m["test_loss"] for m in metrics], label="test loss")
    if min(losses) > 0 and max(losses) > 10 * min(losses):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (training space)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


@torch.no_grad()
def comparison_rows(
    model: nn.Module,
    batch: dict[str, Tensor],
    space: Space | str,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, Tensor]:
    """Rows of uint8 (N, 3, H, W) images to show a model's work on a few test images:
    originals and reconstructions, or, for a separation model, the mixture and each
    source's truth and estimate (gray images as RGB)."""
    out = model(batch["x"].contiguous(memory_format=memory_format))

    def pixels(x: Tensor, space: Space | str) -> Tensor:
        p = to_pixels(x.float(), space).clamp(0, 255).round().to(torch.uint8).cpu()
        return p.expand(-1, 3, -1, -1)

    if not isinstance(model, SeparationModel):
        return {
            "original": pixels(batch["x"], space),
            "reconstruction": pixels(out["x_hat"], space),
        }
    rows = {"mixture": pixels(batch["x"], space)}
    for key, name in (("cifar", "CIFAR"), ("mnist", "digit")):
        rows[f"{name} true"] = pixels(batch[key], "unit")
        rows[f"{name} estimate"] = pixels(out["sources"][key], "unit")
    return rows


def grid_image(rows: dict[str, Tensor]) -> Tensor:
    """The rows as one uint8 image (3, R·H, N·W), for TensorBoard."""
    return torch.cat([torch.cat(list(row), dim=2) for row in rows.values()], dim=1)


def plot_rows(rows: dict[str, Tensor], path: Path, title: str) -> None:
    """A grid of images, one labelled row per entry of `rows` (uint8 (N, 3, H, W) each)."""
    n = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.4 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(images[i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label)
    fig.suptitle(title)
    _save(fig, path)
