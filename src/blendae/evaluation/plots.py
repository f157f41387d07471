"""Figures: the study's loss curves and a grid of test originals above reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt
from torch import Tensor

from blendae.files import atomic_write


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


def plot_reconstructions(x_u8: Tensor, x_hat_u8: Tensor, path: Path, title: str) -> None:
    """Originals (top row) above their reconstructions (bottom row); inputs (N,3,H,W) uint8."""
    n = len(x_u8)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
    for i in range(n):
        for row, images in enumerate((x_u8, x_hat_u8)):
            ax = axes[row][i]
            ax.imshow(images[i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][0].set_ylabel("original")
        axes[1][0].set_ylabel("reconstruction")
    fig.suptitle(title)
    _save(fig, path)
