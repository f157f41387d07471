"""Building blocks shared by the models: pointwise activations by name, and GDN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendae.errors import BlendaeError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "leaky_relu": nn.LeakyReLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    """Build an activation by name; an unknown name is a `BlendaeError` listing the valid ones."""
    if name not in ACTIVATIONS:
        raise BlendaeError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016): x_i / sqrt(β_i + Σ_j γ_ij x_j²).

    `inverse=True` multiplies instead (IGDN, for the synthesis side). β and γ are stored as
    square roots so they stay non-negative without clamping away their gradients.
    """

    def __init__(self, channels: int, inverse: bool = False, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        gamma = gamma_init * torch.eye(channels) + 1e-4  # off-diagonals > 0 so they can learn
        self.gamma_sqrt = nn.Parameter(gamma.sqrt())

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = self.beta_sqrt**2 + 1e-6  # β > 0 keeps the norm away from zero
        gamma = (self.gamma_sqrt**2).view(c, c, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)  # (B, C, H, W)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)
