"""compress(image) → .bae bytes and back, in memory and on files; batched for speed.

Images are uint8 arrays H×W (gray), H×W×1 or H×W×3. The model sees [0, 1] RGB (gray is
repeated to 3 channels), padded at the edges to a multiple of its stride; the decoder crops
back and returns the input's shape. The entropy coder is constriction's ANS coder fed with
the model's frozen integer tables (see `EntropyBottleneck.coder_probabilities`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from blendae import zoo
from blendae.codec import stream
from blendae.codec.entropy import EntropyBottleneck
from blendae.errors import BlendaeError
from blendae.files import atomic_write, ensure_dir
from blendae.models.registry import build_model, get_spec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
BATCH = 256  # images per network call: large enough to amortize, small enough for memory
MAX_PIXELS = 1 << 22  # one network call per image, no tiling: bounds memory (~0.3 GB at 2048²)


@dataclass
class Codec:
    """A loaded, updated codec model, the identifier its files carry, and its coder models."""

    name: str
    model: nn.Module  # has g_a, g_s, entropy_bottleneck and `stride`
    model_id: bytes
    # One constriction model per latent channel, built once from the integer tables.
    channel_models: list[Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        weights = self.entropy_bottleneck.coder_probabilities()  # (M, L)
        self.channel_models = [
            constriction.stream.model.Categorical(row, perfect=False) for row in weights
        ]

    @property
    def entropy_bottleneck(self) -> EntropyBottleneck:
        eb = self.model.entropy_bottleneck
        assert isinstance(eb, EntropyBottleneck)
        return eb


def model_id(model: nn.Module) -> bytes:
    """Short hash of every weight and table (names, dtypes, shapes, bytes) in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.digest()[: stream.MODEL_ID_BYTES]


def build_codec(name: str, model_name: str, model_args: dict, weights: Path) -> Codec:
    """Build registry model `model_name`, load `weights` (with tables), hash it."""
    if get_spec(model_name).kind != "codec":
        raise BlendaeError(
            f"{name}: model {model_name!r} is not a codec; train one with --codec and a codec model"
        )
    model = build_model(model_name, **model_args)
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise BlendaeError(f"cannot read codec weights {weights}: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BlendaeError(f"{weights} does not match model {model_name!r}: {exc}") from exc
    model.eval()
    if not getattr(model.entropy_bottleneck, "is_updated", False):
        raise BlendaeError(
            f"{weights} has no coding tables (saved before update()); finish training the run"
        )
    ident = model_id(model)
    return Codec(name, model.to(memory_format=torch.channels_last), ident)


@lru_cache(maxsize=16)
def load_codec(model: str | None = None) -> Codec:
    """A shipped model by name (None: the default one), or a run folder trained with --codec."""
    name = zoo.DEFAULT if model is None else model
    if name in zoo.entries() or not Path(name).exists():
        meta = zoo.entries().get(name)
        weights = zoo.weights_path(name)  # raises, listing the shipped names, when unknown
        assert meta is not None
        codec = build_codec(name, meta["model"], meta["model_args"], weights)
        if codec.model_id.hex() != meta["id"]:
            raise BlendaeError(f"shipped model {name!r} is damaged: reinstall blendae")
        return codec
    run = Path(name)
    config_path = run / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BlendaeError(f"{run} is not a run folder: cannot read {config_path} ({exc})") from exc
    if not isinstance(config, dict) or "model" not in config:
        raise BlendaeError(f"{config_path} names no model; is {run} a blendae run folder?")
    weights = run / "model.safetensors"
    return build_codec(str(run), config["model"], config.get("model_args", {}), weights)


def _codec_for(model_id_: bytes, model: str | None) -> Codec:
    """The codec that wrote a file: the one asked for, else the shipped one with that id."""
    if model is not None:
        codec = load_codec(model)
        if codec.model_id == model_id_:
            return codec
    for name, meta in zoo.entries().items():
        if meta["id"] == model_id_.hex():
            return load_codec(name)
    raise BlendaeError(
        f"the file was made by codec model {model_id_.hex()}, which is "
        + (f"not {model!r} (id {load_codec(model).model_id.hex()}) nor " if model else "not ")
        + "a shipped model; pass the run folder of the model that made it with --model"
    )


# ---- images ↔ tensors --------------------------------------------------------------------
def _check_image(image: np.ndarray) -> tuple[int, int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise BlendaeError(f"image must be a uint8 numpy array, got {kind}; convert with .astype")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in stream.CHANNELS:
        raise BlendaeError(
            f"image shape {image.shape} is not H×W, H×W×1 or H×W×3; convert to gray or RGB"
        )
    h, w, c = image.shape
    if not (1 <= h <= stream.MAX_SIDE and 1 <= w <= stream.MAX_SIDE) or h * w > MAX_PIXELS:
        raise BlendaeError(
            f"image size {h}x{w} is not supported: sides 1..{stream.MAX_SIDE} pixels and at "
            f"most {MAX_PIXELS} pixels in all; crop or downscale it"
        )
    return h, w, c


def _to_input(images: Sequence[np.ndarray], stride: int) -> Tensor:
    """Same-shape uint8 H×W×C images → (B, 3, H', W') floats in [0, 1], edge-padded to stride."""
    x = torch.from_numpy(np.stack([im.reshape(im.shape[0], im.shape[1], -1) for im in images]))
    x = x.permute(0, 3, 1, 2).float().div(255).expand(-1, 3, -1, -1)  # gray → 3 channels
    h, w = x.shape[2:]
    x = F.pad(x, (0, -w % stride, 0, -h % stride), mode="replicate")
    return x.contiguous(memory_format=torch.channels_last)  # faster oneDNN convolutions


def to_uint8(x_hat: Tensor, channels: int) -> np.ndarray:
    """(B, 3, H, W) reconstructions → uint8 (B, H, W, channels); gray is the channel mean."""
    if channels == 1:
        x_hat = x_hat.mean(dim=1, keepdim=True)
    return torch.round(x_hat.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---- coding --------------------------------------------------------------------------------
def _encode(codec: Codec, symbols: np.ndarray) -> np.ndarray:
    """Table indices (M, h, w) → ANS words; channel 0 ends up on top, so it decodes first.

    The words equal one lazy `Categorical(perfect=False)` call over all indices in
    channel-major order (constriction documents the two as binary compatible; a test checks).
    """
    coder = constriction.stream.stack.AnsCoder()
    for channel in reversed(range(len(symbols))):
        coder.encode_reverse(symbols[channel].reshape(-1), codec.channel_models[channel])
    return coder.get_compressed()


def _decode(codec: Codec, words: np.ndarray, h: int, w: int) -> np.ndarray:
    """ANS words → table indices (M, h, w); leftover words mean a corrupt payload."""
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        symbols = [coder.decode(model, h * w) for model in codec.channel_models]
    except (ValueError, RuntimeError) as exc:
        raise BlendaeError(f"corrupt .bae payload: {exc}") from exc
    if not coder.is_empty():
        raise BlendaeError("corrupt .bae payload: data left over after the last symbol")
    return np.stack(symbols).reshape(-1, h, w)


def compress_batch(images: Sequence[np.ndarray], model: str | None = None) -> list[bytes]:
    """Many images → `.bae` bytes each; same-size images share network calls."""
    codec = load_codec(model)
    shapes = [_check_image(im) for im in images]
    out: list[bytes] = [b""] * len(images)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    stride = int(codec.model.stride)
    for (h, w, c), members in groups.items():
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            with torch.inference_mode():
                y = codec.model.g_a(_to_input([images[i] for i in chunk], stride))
                symbols = codec.entropy_bottleneck.compress(y).numpy()  # (B, M, h', w')
            for i, sym in zip(chunk, symbols, strict=True):
                header = stream.Header(codec.model_id, h, w, c)
                out[i] = stream.pack(header, _encode(codec, sym))
    return out


def compress(image: np.ndarray, model: str | None = None) -> bytes:
    """One uint8 image (H×W, H×W×1 or H×W×3) → `.bae` bytes."""
    return compress_batch([image], model)[0]


def decompress_batch(files: Sequence[bytes], model: str | None = None) -> list[np.ndarray]:
    """Many `.bae` byte strings → uint8 images (H×W for gray inputs, else H×W×3).

    `model` names the run folder of a non-shipped model; shipped ones are found by id.
    """
    return _decompress_parsed([stream.unpack(bytes(data)) for data in files], model)


def _decompress_parsed(
    parsed: list[tuple[stream.Header, np.ndarray]], model: str | None
) -> list[np.ndarray]:
    """Unpacked `.bae` files (header, ANS words) → uint8 images, as `decompress_batch`."""
    for header, _ in parsed:
        if header.height * header.width > MAX_PIXELS:  # only a forged file gets here
            raise BlendaeError(f"corrupt .bae header: image size {header.height}x{header.width}")
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(parsed)
    groups: dict[tuple[bytes, int, int], list[int]] = {}
    for i, (header, _) in enumerate(parsed):
        groups.setdefault((header.model_id, header.height, header.width), []).append(i)
    for (mid, h, w), members in groups.items():
        codec = _codec_for(mid, model)
        stride = int(codec.model.stride)
        hp, wp = -(-h // stride), -(-w // stride)  # latent size
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            symbols = np.stack([_decode(codec, parsed[i][1], hp, wp) for i in chunk])
            indices = torch.from_numpy(symbols)  # (B, M, h', w')
            with torch.inference_mode():
                y_hat = codec.entropy_bottleneck.decompress(indices)
                x_hat = codec.model.g_s(y_hat.contiguous(memory_format=torch.channels_last))
            x_hat = x_hat[:, :, :h, :w]
            for k, rgb in enumerate(to_uint8(x_hat, 3)):  # (B, h, w, 3)
                out[chunk[k]] = rgb
            gray = [k for k, i in enumerate(chunk) if parsed[i][0].channels == 1]
            if gray:
                for k, pixels in zip(gray, to_uint8(x_hat[gray], 1)[..., 0], strict=True):
                    out[chunk[k]] = pixels  # (h, w)
    return out


def decompress(data: bytes, model: str | None = None) -> np.ndarray:
    """`.bae` bytes → uint8 image, H×W for gray inputs and H×W×3 for RGB ones."""
    return decompress_batch([data], model)[0]


# ---- files ---------------------------------------------------------------------------------
def _expand(inputs: list[Path], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files as given, folders as their files with a matching suffix (sorted, not recursive)."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise BlendaeError(f"folder {path} has no {what} ({', '.join(suffixes)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise BlendaeError(f"input {path} does not exist")
    return files


def _targets(files: list[Path], out: Path, suffix: str) -> list[Path]:
    """One input and `out` not a folder: write `out` itself; else `out/STEM.suffix` each."""
    if len(files) == 1 and not out.is_dir() and out.suffix:
        ensure_dir(out.parent)
        return [out]
    if out.exists() and not out.is_dir():
        raise BlendaeError(f"-o {out} is a file but there are {len(files)} inputs; give a folder")
    targets = [out / (f.stem + suffix) for f in files]
    clash = {t for t in targets if targets.count(t) > 1}
    if clash:
        raise BlendaeError(f"several inputs would write {sorted(clash)[0]}; rename one of them")
    ensure_dir(out)
    return targets


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(im.convert("L" if gray else "RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise BlendaeError(f"cannot read image {path}: {exc}") from exc


def compress_paths(inputs: list[Path], out: Path, *, model: str | None = None) -> list[Path]:
    """Image files or folders → `.bae` files in folder `out` (or file `out`, for one input)."""
    files = _expand(inputs, IMAGE_SUFFIXES, "images")
    targets = _targets(files, out, ".bae")
    for target, data in zip(
        targets, compress_batch([_read_image(f) for f in files], model), strict=True
    ):
        atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
    return targets


def decompress_paths(inputs: list[Path], out: Path, *, model: str | None = None) -> list[Path]:
    """`.bae` files or folders → PNG files in folder `out` (or file `out`, for one input)."""
    from PIL import Image

    files = _expand(inputs, (".bae",), ".bae files")
    parsed = []
    for path in files:  # name the bad file before decoding any
        try:
            parsed.append(stream.unpack(path.read_bytes()))
        except BlendaeError as exc:
            raise BlendaeError(f"{path}: {exc}") from exc
    targets = _targets(files, out, ".png")
    images = _decompress_parsed(parsed, model)
    for target, image in zip(targets, images, strict=True):
        atomic_write(target, lambda tmp, im=image: Image.fromarray(im).save(tmp, format="PNG"))
    return targets
