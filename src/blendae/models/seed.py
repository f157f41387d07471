"""The study's autoencoder, exactly: three stride-2 convolutions down, three back up."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class SeedAutoencoder(nn.Module):
    """Conv2d 3→16→32→64 (k4, s2, p1) with LeakyReLU; ConvTranspose2d back; no final activation.

    Latent: 64×4×4 = 1,024 values for a 3×32×32 image. Layer order and default
    initialisation match the study, so the `seed-fullbatch` protocol replays its curve.
    `in_channels=1` makes the same network for gray images.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 16, 4, stride=2, padding=1),  # 3×32×32 → 16×16×16
            nn.LeakyReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),  # → 32×8×8
            nn.LeakyReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),  # → 64×4×4
            nn.LeakyReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),  # → 32×8×8
            nn.LeakyReLU(),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),  # → 16×16×16
            nn.LeakyReLU(),
            nn.ConvTranspose2d(16, in_channels, 4, stride=2, padding=1),  # → 3×32×32
        )

    def forward(self, x: Tensor) -> dict[str, Any]:
        """x (B, 3, 32, 32) → {"x_hat": (B, 3, 32, 32), "likelihoods": {}} (no rate)."""
        return {"x_hat": self.decoder(self.encoder(x)), "likelihoods": {}}
