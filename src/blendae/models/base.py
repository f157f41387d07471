"""The one model contract, and the extra contract of codec models.

Every registered model maps a batch x (B, 3, H, W) in its input space to a dict
`{"x_hat": (B, 3, H, W), "likelihoods": {name: tensor}}`: the likelihoods of each
quantized latent, empty for plain autoencoders, so the loss is always distortion plus a
rate summed over whatever latents a model has (zero when there are none). A model that
can also write bits subclasses `CompressionModel` (as CompressAI's models do): it owns its
coding, so the file layer never reaches into it. A model that unmixes a blend into its two
images subclasses `SeparationModel` and adds `"sources"`. Asking which kind a model is
means asking which class it is, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn


class CompressionModel(nn.Module):
    """A codec model: `forward` trains it; `update` freezes its tables; then it codes.

    `compress(x)` returns, for each image of the batch, its byte strings (one per coded
    latent, `num_strings` of them); `decompress(strings, size)` inverts it for images of
    padded size `size` = (H, W), both multiples of `stride`.
    """

    stride: int = 1  # image sides must be multiples of it (the codec layer pads to it)
    num_strings: ClassVar[int] = 1  # byte strings per image
    # True: compress/decompress take `quality` (0..100) and files record it
    variable_rate: ClassVar[bool] = False
    # True: compress(x, shared=k) codes each k consecutive images of the batch (a larger
    # image's patches) into one string, and decompress(strings, size, shared=k) decodes them
    patches: ClassVar[bool] = False

    @property
    def is_updated(self) -> bool:
        """Whether `update()` has frozen the tables that coding needs."""
        raise NotImplementedError

    def update(self) -> None:
        """Freeze the integer coding tables; call once after training, before coding."""
        raise NotImplementedError

    def compress(self, x: Tensor) -> list[list[bytes]]:
        raise NotImplementedError

    def decompress(self, strings: Sequence[Sequence[bytes]], size: tuple[int, int]) -> Tensor:
        raise NotImplementedError


class SeparationModel(nn.Module):
    """A model that unmixes a blend (`unit` space, [0, 1]) into its two images.

    `forward` adds `"sources": {"cifar": (B, 3, H, W), "mnist": (B, 1, H, W)}`, both in
    [0, 1]; `x_hat` is their blend. H and W must be multiples of `stride`.
    """

    stride: int = 1
    preset: ClassVar[str] = "unit"  # the input space separation models are trained in
