"""Images ↔ `.bae` bytes, in memory and batched: the codec's Python API.

Images are uint8 arrays H×W (gray), H×W×1 or H×W×3. They are converted from pixels into
the model's input space (its preset; gray is repeated to 3 channels), padded at the edges to
a multiple of the model's stride, and coded by the model itself; decoding crops back and
returns the input's shape. Same-size images share network calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from blendae.codec import container
from blendae.codec.loader import Codec, codec_for, load_codec
from blendae.data import from_pixels, to_pixels
from blendae.errors import BlendaeError

BATCH = 256  # images per network call: large enough to amortize, small enough for memory
MAX_PIXELS = 1 << 22  # one network call per image, no tiling: bounds memory (~0.3 GB at 2048²)


def check_image(image: np.ndarray) -> tuple[int, int, int]:
    """(height, width, channels) of a codable image, else a `BlendaeError` saying why not."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise BlendaeError(f"image must be a uint8 numpy array, got {kind}; convert with .astype")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in container.CHANNELS:
        raise BlendaeError(
            f"image shape {image.shape} is not H×W, H×W×1 or H×W×3; convert to gray or RGB"
        )
    h, w, c = image.shape
    if not (1 <= h <= container.MAX_SIDE and 1 <= w <= container.MAX_SIDE) or h * w > MAX_PIXELS:
        raise BlendaeError(
            f"image size {w}x{h} (width x height) is not supported: sides 1..{container.MAX_SIDE}"
            f" pixels and at most {MAX_PIXELS} pixels in all; crop or downscale it"
        )
    return h, w, c


def to_input(images: Sequence[np.ndarray], codec: Codec) -> Tensor:
    """Same-shape uint8 images → (B, 3, H', W') in the model's space, edge-padded to stride."""
    x = torch.from_numpy(np.stack([im.reshape(im.shape[0], im.shape[1], -1) for im in images]))
    x = x.permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1)  # gray → 3 channels
    x = from_pixels(x, codec.preset)
    h, w = x.shape[2:]
    stride = codec.model.stride
    x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="replicate")
    return x.contiguous(memory_format=torch.channels_last)  # faster oneDNN convolutions


def to_uint8(x_hat: Tensor, codec: Codec, channels: int) -> np.ndarray:
    """(B, 3, H, W) reconstructions → uint8 (B, H, W, channels); gray is the channel mean."""
    pixels = to_pixels(x_hat, codec.preset)
    if channels == 1:
        pixels = pixels.mean(dim=1, keepdim=True)
    return torch.round(pixels.clamp(0, 255)).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def reconstruct(images: Sequence[np.ndarray], model: str | None = None) -> np.ndarray:
    """What decoding the images' files gives, computed by the model's evaluation forward pass
    (no entropy coding): same-shape images → uint8 (B, H, W, 3)."""
    codec = load_codec(model)
    h, w = images[0].shape[:2]
    with torch.inference_mode():
        x_hat = codec.model(to_input(images, codec))["x_hat"][:, :, :h, :w]
    return to_uint8(x_hat, codec, 3)


def compress_batch(images: Sequence[np.ndarray], model: str | None = None) -> list[bytes]:
    """Many images → `.bae` bytes each; same-size images share network calls."""
    codec = load_codec(model)
    shapes = [check_image(im) for im in images]
    out: list[bytes] = [b""] * len(images)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    for (h, w, c), members in groups.items():
        header = container.Header(codec.model_id, h, w, c)
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            with torch.inference_mode():
                strings = codec.model.compress(to_input([images[i] for i in chunk], codec))
            for i, image_strings in zip(chunk, strings, strict=True):
                out[i] = container.pack(header, image_strings)
    return out


def compress(image: np.ndarray, model: str | None = None) -> bytes:
    """One uint8 image (H×W, H×W×1 or H×W×3) → `.bae` bytes."""
    return compress_batch([image], model)[0]


def decompress_batch(files: Sequence[bytes], model: str | None = None) -> list[np.ndarray]:
    """Many `.bae` byte strings → uint8 images (H×W for gray inputs, else H×W×3).

    `model` names the run folder of a non-shipped model; shipped ones are found by id.
    """
    return decompress_parsed([container.unpack(bytes(data)) for data in files], model)


def decompress_parsed(
    parsed: list[tuple[container.Header, bytes]], model: str | None
) -> list[np.ndarray]:
    """Unpacked `.bae` files (header, payload) → uint8 images, as `decompress_batch`."""
    for header, _ in parsed:
        if header.height * header.width > MAX_PIXELS:  # only a forged file gets here
            raise BlendaeError(f"corrupt .bae header: image size {header.width}x{header.height}")
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(parsed)
    groups: dict[tuple[bytes, int, int], list[int]] = {}
    for i, (header, _) in enumerate(parsed):
        groups.setdefault((header.model_id, header.height, header.width), []).append(i)
    for (ident, h, w), members in groups.items():
        codec = codec_for(ident, model)
        stride = codec.model.stride
        size = (h + -h % stride, w + -w % stride)  # the padded image the model coded
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            strings = [
                container.split_strings(parsed[i][1], codec.model.num_strings) for i in chunk
            ]
            with torch.inference_mode():
                x_hat = codec.model.decompress(strings, size)[:, :, :h, :w]
            rgb = to_uint8(x_hat, codec, 3)  # (B, h, w, 3)
            gray = to_uint8(x_hat, codec, 1)[..., 0]  # (B, h, w)
            for k, i in enumerate(chunk):
                out[i] = gray[k] if parsed[i][0].channels == 1 else rgb[k]
    return out


def decompress(data: bytes, model: str | None = None) -> np.ndarray:
    """`.bae` bytes → uint8 image, H×W for gray inputs and H×W×3 for RGB ones."""
    return decompress_batch([data], model)[0]
