"""The codec model: Ballé et al., "End-to-end optimized image compression" (ICLR 2017).

Analysis transform g_a (strided convolutions with GDN) → latent y → quantized y_hat with a
learned factorized prior (`blendae.codec.entropy.EntropyBottleneck`) → synthesis g_s
(sub-pixel convolutions with inverse GDN) → x_hat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blendae.codec.entropy import EntropyBottleneck, quantize
from blendae.errors import BlendaeError
from blendae.models.conv import make_activation


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


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.Sequential:
    # Sub-pixel convolution: the 4 output phases of a 2× upsampling computed by one 3×3
    # convolution; the receptive field of a 5×5 transposed convolution at a fraction of
    # its CPU cost.
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2))


def _act(name: str, channels: int, inverse: bool) -> nn.Module:
    """GDN (IGDN on the synthesis side), or a pointwise activation from `models.conv`."""
    return GDN(channels, inverse=inverse) if name == "gdn" else make_activation(name)


class FactorizedPrior(nn.Module):
    """Ballé 2017 codec with `depth` stride-2 stages: a (M, H/2^depth, W/2^depth) latent.

    N: channels of the hidden layers; M: latent channels; act: "gdn" (GDN/IGDN, the paper's)
    or a pointwise activation name. On 32×32 images depth 2 gives an 8×8 latent, enough for
    the 1–2.5 bpp range. ste=True decodes the rounded latent with a straight-through
    gradient while the rate still sees the noisy one (as in Minnen & Singh 2020): the
    synthesis then trains on what it will decode, worth ~0.5 dB after one CPU epoch here.
    The defaults are the shipped models' architecture.
    """

    def __init__(
        self, N: int = 64, M: int = 32, depth: int = 2, act: str = "gdn", ste: bool = True
    ) -> None:
        super().__init__()
        if N < 1 or M < 1 or depth < 1:
            raise BlendaeError(
                f"bad factorized codec shape N={N} M={M} depth={depth}; all must be >= 1"
            )
        self.stride = 2**depth
        self.ste = ste
        g_a: list[nn.Module] = []
        for i in range(depth):
            g_a += [_down(3 if i == 0 else N, N), _act(act, N, inverse=False)]
        g_a.append(nn.Conv2d(N, M, 3, padding=1))
        g_s: list[nn.Module] = [nn.Conv2d(M, N, 3, padding=1)]
        for i in reversed(range(depth)):
            g_s += [_act(act, N, inverse=True), _up(N, 3 if i == 0 else N)]
        self.g_a = nn.Sequential(*g_a)
        self.g_s = nn.Sequential(*g_s)
        self.entropy_bottleneck = EntropyBottleneck(M)

    def forward(self, x: Tensor) -> dict[str, Tensor | dict[str, Tensor]]:
        """x (B, 3, H, W), H and W multiples of `stride` → {"x_hat", "likelihoods": {"y"}}."""
        y = self.g_a(x)  # (B, M, H/stride, W/stride)
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        if self.training and self.ste:
            # Rate from the noisy latent, synthesis from the rounded one (straight-through):
            # training then sees the decoder's true input.
            y_hat = y + (quantize(y, "dequantize") - y).detach()
        x_hat = self.g_s(y_hat)  # (B, 3, H, W)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods}}

    def update(self) -> None:
        """Freeze the integer coding tables; call after training, before coding."""
        self.entropy_bottleneck.update()
