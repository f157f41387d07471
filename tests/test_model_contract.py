"""Adding a codec model is adding a class: a test-only model trains with the project's loop
and codes files through the codec layer, with no change to either."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from blendae import codec, runs
from blendae.config import RunConfig
from blendae.data import BlendedSplits
from blendae.models import MODELS, CompressionModel
from blendae.models.entropy import EntropyBottleneck
from blendae.models.registry import ModelSpec
from blendae.training import loop


class TwoLatentCodec(CompressionModel):
    """A tiny codec with two coded latents (two strings per image), unlike the shipped one."""

    stride = 4
    num_strings = 2

    def __init__(self) -> None:
        super().__init__()
        self.g_a = nn.Conv2d(3, 4, 4, stride=4)
        self.g_s = nn.ConvTranspose2d(4, 3, 4, stride=4)
        self.coarse = EntropyBottleneck(2)
        self.fine = EntropyBottleneck(2)

    def forward(self, x: Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        y1_hat, lik1 = self.coarse(y[:, :2])
        y2_hat, lik2 = self.fine(y[:, 2:])
        x_hat = self.g_s(torch.cat([y1_hat, y2_hat], dim=1))
        return {"x_hat": x_hat, "likelihoods": {"coarse": lik1, "fine": lik2}}

    @property
    def is_updated(self) -> bool:
        return self.coarse.is_updated and self.fine.is_updated

    def update(self) -> None:
        self.coarse.update()
        self.fine.update()

    def compress(self, x: Tensor) -> list[list[bytes]]:
        y = self.g_a(x)
        return [
            list(p)
            for p in zip(self.coarse.compress(y[:, :2]), self.fine.compress(y[:, 2:]), strict=True)
        ]

    def decompress(self, strings: Sequence[Sequence[bytes]], size: tuple[int, int]) -> Tensor:
        latent = (size[0] // 4, size[1] // 4)
        y1 = self.coarse.decompress([s[0] for s in strings], latent)
        y2 = self.fine.decompress([s[1] for s in strings], latent)
        return self.g_s(torch.cat([y1, y2], dim=1).contiguous(memory_format=torch.channels_last))


def test_a_new_codec_model_trains_and_codes(
    tiny_splits: BlendedSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MODELS, "two-latent", ModelSpec(TwoLatentCodec, "test only"))
    config = RunConfig(model="two-latent", preset="unit", lmbda=0.01, epochs=2, batch_size=16)
    metrics = loop.train(config, tmp_path / "run", tiny_splits, progress=False)
    assert all(m["test_bpp"] > 0 and "train_bpp" in m for m in metrics)
    _, model = runs.load_model(tmp_path / "run")
    assert isinstance(model, TwoLatentCodec) and model.is_updated  # tables frozen at the end

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (13, 22, 3), dtype=np.uint8) for _ in range(3)]
    files = codec.compress_batch(images, str(tmp_path / "run"))
    decoded = codec.decompress_batch(files, str(tmp_path / "run"))
    from blendae.codec.images import reconstruct

    for image, out in zip(images, decoded, strict=True):
        assert np.array_equal(out, reconstruct([image], str(tmp_path / "run"))[0])
