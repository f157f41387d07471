"""Images ↔ `.bae` bytes, in memory and batched: the codec's Python API.

Images are uint8 arrays H×W (gray), H×W×1 or H×W×3. They are converted from pixels into
the model's input space (its preset; gray is repeated to 3 channels), padded at the edges to
a multiple of the model's stride, and coded by the model itself; decoding crops back and
returns the input's shape. Same-size images share network calls, a bounded number of
pixels at a time. An image well over the side of the model's training images is coded as
patches of that side in one stream (`in_patches`); a model without that record codes a
large image whole, in tiles, so memory stays bounded either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from blendae.codec import container, limits
from blendae.codec.limits import Named, batches, check_size, naming
from blendae.codec.loader import Codec, codec_for, load_codec
from blendae.data import from_pixels, to_pixels
from blendae.errors import BlendaeError


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
    check_size(h, w)
    return h, w, c


def to_input(images: Sequence[np.ndarray], codec: Codec, multiple: int | None = None) -> Tensor:
    """Same-shape uint8 images → (B, 3, H', W') in the model's space, edge-padded to a
    multiple of `multiple` (default: the model's stride)."""
    x = torch.from_numpy(np.stack([im.reshape(im.shape[0], im.shape[1], -1) for im in images]))
    x = x.permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1)  # gray → 3 channels
    x = from_pixels(x, codec.preset)
    h, w = x.shape[2:]
    stride = multiple or codec.model.stride
    x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="replicate")
    return x.contiguous(memory_format=torch.channels_last)  # faster oneDNN convolutions


def in_patches(codec: Codec, height: int, width: int) -> bool:
    """Whether an image is coded as patches: it is well over the side of the model's
    training images. Those networks never saw the inside of a larger image (every position
    of a 32×32 training image is near an edge): in patches the general model took 38-57 %
    fewer bits (BD-rate) than coded whole on 64×64 to 160×160 images and 28-32 % fewer on
    long strips; up to 1.5 patch sides, padding to whole patches costs more (40×40, 48×48:
    10 % more bits in patches; 56×56: 40 % fewer). `benchmarks/patches.py` measures it, on
    validation images only."""
    return codec.patch is not None and 2 * max(height, width) > 3 * codec.patch


def to_patches(x: Tensor, patch: int) -> Tensor:
    """(B, 3, H, W), sides multiples of `patch` → (B·rows·columns, 3, patch, patch): each
    image's patches in row-major order, image after image."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, c, patch, patch).contiguous(memory_format=torch.channels_last)


def from_patches(x: Tensor, rows: int, columns: int) -> Tensor:
    """The inverse of `to_patches`: (B·rows·columns, 3, p, p) → (B, 3, rows·p, columns·p)."""
    _, c, p, _ = x.shape
    x = x.reshape(-1, rows, columns, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, c, rows * p, columns * p)


def patch_grid(codec: Codec, height: int, width: int) -> tuple[int, int] | None:
    """(rows, columns) of the patches an image is coded in, or None (coded whole)."""
    if not in_patches(codec, height, width):
        return None
    assert codec.patch is not None
    return limits.grid(height, width, codec.patch)


def to_uint8(x_hat: Tensor, codec: Codec, channels: int) -> np.ndarray:
    """(B, 3, H, W) reconstructions → uint8 (B, H, W, channels); gray is the channel mean."""
    pixels = to_pixels(x_hat, codec.preset)
    if channels == 1:  # added in a fixed order: the same bits on every machine
        pixels = ((pixels[:, 0] + pixels[:, 1] + pixels[:, 2]) / 3).unsqueeze(1)
    return torch.round(pixels.clamp(0, 255)).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def reconstruct(
    images: Sequence[np.ndarray], model: str | None = None, quality: int | None = None
) -> np.ndarray:
    """What decoding the images' files gives, computed by the model's evaluation forward pass
    (no entropy coding): same-shape images → uint8 (B, H, W, 3)."""
    codec = load_codec(model)
    q = resolve_quality(codec, quality)
    h, w = images[0].shape[:2]

    def forward(x: Tensor) -> Tensor:
        return (codec.model(x) if q is None else codec.model(x, q))["x_hat"]

    with torch.inference_mode():
        grid = patch_grid(codec, h, w)
        if grid is None:
            return to_uint8(forward(to_input(images, codec))[:, :, :h, :w], codec, 3)
        p = codec.patch
        assert p is not None
        x = to_patches(to_input(images, codec, p), p)
        step = max(1, limits.BATCH_PIXELS // (p * p))
        x_hat = torch.cat([forward(x[i : i + step]) for i in range(0, len(x), step)])
        return to_uint8(from_patches(x_hat, *grid)[:, :, :h, :w], codec, 3)


def resolve_quality(codec: Codec, quality: int | None) -> int | None:
    """The quality a file is coded at: `quality` (default: the model's) for a variable-rate
    model; None for a fixed-rate one, which refuses a quality."""
    if not codec.model.variable_rate:
        if quality is not None:
            raise BlendaeError(
                f"model {codec.name!r} codes at one fixed rate; --quality needs a variable-rate "
                "model (the default, general)"
            )
        return None
    q = codec.quality if quality is None else quality
    if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= container.MAX_QUALITY:
        raise BlendaeError(f"quality must be an integer 0..100, got {q!r}")
    return q


def compress_batch(
    images: Sequence[np.ndarray], model: str | None = None, quality: int | None = None
) -> list[bytes]:
    """Many images → `.bae` bytes each; same-size images share network calls. `quality`
    (0..100) sets a variable-rate model's trade-off (default: the model's own)."""
    codec = load_codec(model)
    q = resolve_quality(codec, quality)
    coding = {} if q is None else {"quality": q}
    shapes = [check_image(im) for im in images]
    out: list[bytes] = [b""] * len(images)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    for (h, w, c), members in groups.items():
        grid = patch_grid(codec, h, w)
        patch = None if grid is None else codec.patch
        header = container.Header(codec.model_id, h, w, c, q, patch)
        shared = {} if grid is None else {"shared": grid[0] * grid[1]}  # patches per file
        pixels = h * w if patch is None else shared["shared"] * patch * patch
        for chunk in batches(members, pixels):
            with torch.inference_mode():
                x = to_input([images[i] for i in chunk], codec, patch)
                x = x if patch is None else to_patches(x, patch)
                strings = codec.model.compress(x, **coding, **shared)
            for i, image_strings in zip(chunk, strings, strict=True):
                out[i] = container.pack(header, image_strings)
    return out


def compress(image: np.ndarray, model: str | None = None, quality: int | None = None) -> bytes:
    """One uint8 image (H×W, H×W×1 or H×W×3) → `.bae` bytes."""
    return compress_batch([image], model, quality)[0]


def decompress_batch(files: Sequence[bytes], model: str | None = None) -> list[np.ndarray]:
    """Many `.bae` byte strings → uint8 images (H×W for gray inputs, else H×W×3).

    `model` names the run folder of a non-shipped model; shipped ones are found by id.
    """
    return decompress_parsed([container.unpack(bytes(data)) for data in files], model)


def decompress_parsed(
    parsed: list[tuple[container.Header, bytes]],
    model: str | None,
    names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Unpacked `.bae` files (header, payload) → uint8 images, as `decompress_batch`.

    Every header and model is checked before any decoding, and a model entropy-decodes a
    batch before its network runs, so a bad file fails fast; `names` (one per file) prefix
    the errors that concern one file.
    """

    named = naming(names)
    groups = limits.groups(parsed, named)
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(parsed)
    codecs = {key: codec_for(key[0], model) for key in groups}  # refuse before any decoding
    for key, members in groups.items():
        limits.check_made_by(parsed, members, codecs[key].model_id, named)
    for key, members in groups.items():
        codec, (_, h, w, quality, patch) = codecs[key], key
        limits.check_quality(codec.model.variable_rate, quality, named, members[0])
        coding = {} if quality is None else {"quality": quality}
        stride = codec.model.stride
        size = (h + -h % stride, w + -w % stride)  # the padded image the model coded
        rows = columns = 1
        if patch is not None:  # or its patches, each k = rows · columns to a string
            limits.check_patch(codec.name, codec.model.patches, stride, patch, named, members[0])
            (rows, columns), size = limits.grid(h, w, patch), (patch, patch)
            coding["shared"] = rows * columns
        for chunk in batches(members, rows * columns * size[0] * size[1]):
            strings = limits.strings_of(parsed, chunk, codec.model.num_strings, named)
            try:
                with torch.inference_mode():
                    x_hat = codec.model.decompress(strings, size, **coding)
            except BlendaeError:
                _name_the_bad_file(codec, chunk, strings, size, named, coding)
                raise
            if patch is not None:
                x_hat = from_patches(x_hat, rows, columns)
            x_hat = x_hat[:, :, :h, :w]
            kinds = {parsed[i][0].channels for i in chunk}
            rgb = to_uint8(x_hat, codec, 3) if 3 in kinds else None  # (B, h, w, 3)
            gray = to_uint8(x_hat, codec, 1)[..., 0] if 1 in kinds else None  # (B, h, w)
            for k, i in enumerate(chunk):
                pick = gray if parsed[i][0].channels == 1 else rgb
                assert pick is not None
                out[i] = pick[k]
    return out


def _name_the_bad_file(
    codec: Codec,
    chunk: list[int],
    strings: list[list[bytes]],
    size: tuple[int, int],
    named: Named,
    coding: dict[str, int],
) -> None:
    """A batch failed to decode: find its first bad file and raise that file's error."""
    for i, one in zip(chunk, strings, strict=True):
        try:
            with torch.inference_mode():
                codec.model.decompress([one], size, **coding)
        except BlendaeError as exc:
            raise named(i, exc) from exc


def decompress(data: bytes, model: str | None = None) -> np.ndarray:
    """`.bae` bytes → uint8 image, H×W for gray inputs and H×W×3 for RGB ones."""
    return decompress_batch([data], model)[0]
