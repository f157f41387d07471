"""The codec models as the torch-free decoder runs them: loaded from a model's
`NAME.safetensors` and `NAME.json` (what the zoo stores), checked against their id.

`Hyperprior` decodes exactly as `models.hyperprior.MeanScaleHyperprior.decompress` does
(the same pixels, bit for bit), and `Gained` as `models.gained.GainedHyperprior` does (the
variable-rate general model: its files name a quality); `Factorized` runs the 0.2 models'
float networks, whose pixels may differ by one level from torch's, as they may between
machines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from blendae import ans
from blendae.codec.container import MAX_QUALITY, MODEL_ID_BYTES
from blendae.codec.decode.layers import F32, Layer, network, run
from blendae.data.presets import PRESETS, pixel_range
from blendae.errors import BlendaeError

BATCH_PIXELS = 1 << 16  # output pixels per network call: bounds the im2col buffers
HALO = 4  # input units of context around a band: covers every decoder's receptive field
# The Sequential layout of each network, one letter per index (see `layers.network`).
HYPERPRIOR = {
    "h_s": "T C S R T C S R T C",
    "g_s": "T C T I T C S T I T C S",
    "ctx": "T C",
    "ep": "T C R T C R T C",
}
FACTORIZED_G_S = {2: "C I C0 I C0"}  # by depth


def model_id(weights: dict[str, np.ndarray]) -> bytes:
    """`codec.loader.model_id` of the torch model these weights load into: its float16 and
    float32 tensors become float32 parameters and buffers; the others keep their dtype."""
    digest = hashlib.sha256()
    for name, array in sorted(weights.items()):
        if array.dtype in (np.float16, np.float32):
            array = array.astype(np.float32)
        digest.update(f"{name}|torch.{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.digest()[:MODEL_ID_BYTES]


def _in_bands(layers: list[Layer], x: np.ndarray, factor: int) -> np.ndarray:
    """The network over x (B, H, W, C) upsampling by `factor`, a few images or rows at a
    time: exact networks give the same bits for any split (each output sees only its
    receptive field, which the halo covers)."""
    b, h, w, _ = x.shape
    per_image = h * w * factor * factor
    if b * per_image <= BATCH_PIXELS or (b > 1 and per_image <= BATCH_PIXELS):
        step = max(1, BATCH_PIXELS // per_image)
        return np.concatenate([run(layers, x[i : i + step]) for i in range(0, b, step)])
    if b > 1:
        return np.concatenate([_in_bands(layers, x[i : i + 1], factor) for i in range(b)])
    rows = max(1, BATCH_PIXELS // (w * factor * factor))
    bands = []
    for r0 in range(0, h, rows):
        lo, hi = max(r0 - HALO, 0), min(r0 + rows + HALO, h)
        out = run(layers, x[:, lo:hi])
        bands.append(out[:, (r0 - lo) * factor : (min(r0 + rows, h) - lo) * factor])
    return np.concatenate(bands, axis=1)


@dataclass(eq=False)  # one per model: compared and hashed by identity
class Decoder:
    """A codec model loaded for decoding: its id, input space and networks."""

    name: str
    model_id: bytes
    preset: str
    stride: int
    exact: bool  # whether its pixels equal the torch decoder's bit for bit
    weights: dict[str, np.ndarray] = field(repr=False)
    variable_rate = False  # whether its files carry a quality
    patches = False  # whether it decodes one stream of many images (a large image's patches)

    def decode(
        self,
        strings: Sequence[bytes],
        size: tuple[int, int],
        quality: int | None = None,
        shared: int = 0,
    ) -> np.ndarray:
        """One payload per image, all of padded size `size` (and coded at `quality`, for a
        variable-rate model) → x_hat (B, H, W, 3) float32; `shared` = k > 0: each payload
        holds k images (a larger image's patches)."""
        raise NotImplementedError

    def check_quality(self, quality: int | None) -> None:
        """A quality exactly where the model is variable-rate, and in 0..100."""
        if self.variable_rate != (quality is not None):
            want = "a quality" if self.variable_rate else "no quality"
            raise BlendaeError(f"model {self.name!r} decodes with {want}, not {quality!r}")
        if quality is not None and not 0 <= quality <= MAX_QUALITY:
            raise BlendaeError(f"quality {quality} is not in 0..{MAX_QUALITY}")

    @cached_property
    def z_models(self) -> list[Any]:
        """The factorized prior's coder models, one per channel."""
        return [ans.categorical(row) for row in self.weights["entropy_bottleneck._pmf"]]

    def factorized(
        self, strings: Sequence[bytes], size: tuple[int, int], shared: int = 0
    ) -> tuple[list[Any], np.ndarray]:
        """Open the coders and pop each image's factorized latent: (coders, (B, h, w, C));
        `shared` = k > 0: each string's coder, listed once for each of its k images
        (`MeanScaleHyperprior.compress`)."""
        streams = [ans.open_coder(s) for s in strings]
        coders = [coder for coder in streams for _ in range(shared or 1)]
        models = self.z_models
        indices = [ans.decoding(lambda c=c: ans.decode_factorized(c, models, size)) for c in coders]
        offset = self.weights["entropy_bottleneck._offset"].astype(np.int64)
        latent = np.stack(indices).astype(np.int64) + offset[None, :, None, None]
        return coders, latent.astype(F32).transpose(0, 2, 3, 1)


class Factorized(Decoder):
    """The factorized models (0.2): float networks, one string of y per image."""

    def decode(
        self,
        strings: Sequence[bytes],
        size: tuple[int, int],
        quality: int | None = None,
        shared: int = 0,
    ) -> np.ndarray:
        self.check_quality(quality)
        if shared:
            raise BlendaeError(f"model {self.name!r} codes no patches")
        coders, y_hat = self.factorized(strings, (size[0] // self.stride, size[1] // self.stride))
        for coder in coders:
            ans.check_empty(coder)
        return _in_bands(self.g_s, y_hat, self.stride)

    @cached_property
    def g_s(self) -> list[Layer]:
        return network(FACTORIZED_G_S[self.stride.bit_length() - 1], "g_s", self.weights, False)


class Hyperprior(Decoder):
    """The mean–scale hyperprior models (0.3 and later): exact networks, z then y."""

    def __init__(self, *args: Any, M: int, context: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.M, self.context = M, context
        self.nets = {
            name: network(spec, name, self.weights)
            for name, spec in HYPERPRIOR.items()
            if context or name in ("h_s", "g_s")
        }
        self.tables = ans.GaussianTables(
            self.weights["gaussian._pmf"], self.weights["gaussian._radius"]
        )

    patches = True

    def decode(
        self,
        strings: Sequence[bytes],
        size: tuple[int, int],
        quality: int | None = None,
        shared: int = 0,
    ) -> np.ndarray:
        self.check_quality(quality)
        coders, z_hat = self.factorized(strings, (size[0] // 16, size[1] // 16), shared)
        hs = _in_bands(self.nets["h_s"], z_hat, 4)  # (B, h, w, 2M)
        m = self.M
        symbols = np.zeros((len(coders), m, *hs.shape[1:3]), dtype=np.int32)
        anchors = np.add.outer(np.arange(hs.shape[1]), np.arange(hs.shape[2])) % 2 == 0
        full = (m, *anchors.shape)
        parts = [np.ones(full, bool)]
        if self.context:
            parts = [np.broadcast_to(anchors, full), np.broadcast_to(~anchors, full)]
        params = hs
        for k, part in enumerate(parts):
            if k:  # the rest, given the decoded anchors
                y = symbols.transpose(0, 2, 3, 1).astype(F32) + hs[..., :m]
                y_anchors = np.where(anchors[:, :, None], y, F32(0))
                params = np.where(anchors[:, :, None], hs, self._rest(hs, y_anchors))
            scale = params[..., m:].transpose(0, 3, 1, 2)[:, part]
            indices = ans.entries(scale, self.weights["gaussian.thresholds"])
            apart = bool(self.context) and k == len(parts) - 1
            decoded = ans.decoding(
                lambda i=indices, a=apart: self.tables.decode_batch(coders, i, a)
            )
            if apart:
                decoded = ans.decoding(lambda d=decoded: ans.decode_signs(coders, d))
            symbols[:, part] = decoded
        for coder in coders[:: shared or 1]:
            ans.check_empty(coder)
        y_hat = symbols.transpose(0, 2, 3, 1).astype(F32) + params[..., :m]
        return _in_bands(self.nets["g_s"], self._out(y_hat, quality), 4)

    def _out(self, y_hat: np.ndarray, quality: int | None) -> np.ndarray:
        """g_s's input from the decoded latent (B, h, w, M): the latent itself."""
        return y_hat

    def _rest(self, hs: np.ndarray, y_anchors: np.ndarray) -> np.ndarray:
        """Mean and scale of the non-anchors: h_s's plus the context networks' correction."""

        def correct(both: np.ndarray) -> np.ndarray:
            h, y = both[..., : 2 * self.M], both[..., 2 * self.M :]
            ctx = run(self.nets["ctx"], y)
            return h + run(self.nets["ep"], np.concatenate([h, ctx], axis=3))

        return _in_bands([correct], np.concatenate([hs, y_anchors], axis=3), 1)


class Gained(Hyperprior):
    """The gained hyperprior (the variable-rate general model): the hyperprior with the
    context, whose decoded latent is scaled per channel by the stored float32 row
    `inv_gain_table[quality]` before g_s (one correctly rounded float32 multiply)."""

    variable_rate = True

    def _out(self, y_hat: np.ndarray, quality: int | None) -> np.ndarray:
        assert quality is not None  # `decode` checked it
        row = self.weights["inv_gain_table"][quality].astype(F32)
        return y_hat * row  # (B, h, w, M) × (M,): channels last

    def check_tables(self) -> None:
        """The inverse gain table holds one row of M float32 gains per quality 0..100."""
        table = self.weights["inv_gain_table"]
        if table.dtype != F32 or table.shape != (MAX_QUALITY + 1, self.M):
            raise ValueError(f"inv_gain_table is {table.dtype} {table.shape}")


def load(meta_path: Path) -> Decoder:
    """A model stored as the zoo stores them: NAME.json beside NAME.safetensors."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        weights = load_file(str(meta_path.with_suffix(".safetensors")))
        kind, args = meta["model"], meta["model_args"]
        common = dict(name=meta["name"], model_id=model_id(weights), preset=meta["preset"])
        if kind in ("hyperprior", "gained"):
            decoder: Decoder = (Gained if kind == "gained" else Hyperprior)(
                stride=16,
                exact=True,
                weights=weights,
                M=args.get("M", 32),
                context=args.get("context", 0),
                **common,
            )
            if isinstance(decoder, Gained):
                decoder.check_tables()
        elif kind == "factorized" and args.get("act", "gdn") == "gdn" and args.get("depth", 2) == 2:
            decoder = Factorized(stride=4, exact=False, weights=weights, **common)
        else:
            raise BlendaeError(f"model {meta_path}: the torch-free decoder has no {kind!r} {args}")
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise BlendaeError(f"model {meta_path} is damaged ({exc}); reinstall it") from exc
    if decoder.model_id.hex() != meta["id"] or decoder.preset not in PRESETS:
        raise BlendaeError(f"model {meta_path} is damaged: its weights do not match its id")
    return decoder


def to_uint8(x_hat: np.ndarray, preset: str, channels: int) -> np.ndarray:
    """(B, H, W, 3) reconstructions → uint8 (B, H, W, channels), as `codec.images.to_uint8`:
    the preset's affine map to pixels in float32, the gray mean in a fixed order, clamped
    and rounded half to even."""
    lo, hi = pixel_range(PRESETS[preset])
    scale = np.array([255 / (h - low) for low, h in zip(lo, hi, strict=True)], dtype=F32)
    pixels = (x_hat - np.array(lo, dtype=F32)) * scale
    if channels == 1:
        pixels = ((pixels[..., 0] + pixels[..., 1] + pixels[..., 2]) / F32(3))[..., None]
    return np.rint(np.clip(pixels, F32(0), F32(255))).astype(np.uint8)
