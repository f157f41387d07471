"""The torch-free decoder: `.bae` bytes → pixels with numpy, constriction and safetensors.

It gives the torch decoder's pixels bit for bit for every model with exact networks (the
shipped ones and the 0.3 and 0.4 baselines): the same entropy decoding (`blendae.ans`), the
same integer networks derived by the same float64 operations (`layers`), the same rounding.
Starting it takes a fraction of a second where importing torch takes two, so a few files
decode faster here; `blendae decompress` chooses (`codec.files`). It never imports torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from blendae.codec import container, limits
from blendae.codec.decode.models import Decoder, load, to_uint8
from blendae.codec.limits import Named, batches, check_patch, check_quality, naming
from blendae.codec.zoo import canonical, unknown_model, zoo_entries, zoo_folder
from blendae.errors import BlendaeError

__all__ = [
    "Decoder",
    "decode",
    "decode_parsed",
    "decoder_for",
    "handles",
    "load_decoder",
    "torch_installed",
]


@lru_cache(maxsize=16)
def load_decoder(model: str) -> Decoder:
    """A shipped model by name, or a model stored as the zoo stores them (NAME.json)."""
    model = canonical(model)
    if model in zoo_entries():
        return load(zoo_folder() / f"{model}.json")
    if model.endswith(".json") and Path(model).is_file():
        return load(Path(model))
    raise BlendaeError(
        f"the torch-free decoder reads shipped models and NAME.json files, not {model!r}"
    )


def decoder_for(ident: bytes, model: str | None = None, extra: Sequence[Decoder] = ()) -> Decoder:
    """The decoder of files with model id `ident`: `model` (a name or NAME.json), one of
    `extra`, else a shipped one; the same error as `codec.loader.codec_for` otherwise."""
    asked = load_decoder(model) if model is not None else None
    for decoder in [*([asked] if asked else []), *extra]:
        if container.names(ident, decoder.model_id):
            return decoder
    for name, meta in zoo_entries().items():
        if container.names(ident, bytes.fromhex(meta["id"])):
            return load_decoder(name)
    raise unknown_model(ident, model, asked.model_id.hex() if asked else None)


def decode(data: bytes, models: Sequence[Decoder] = ()) -> np.ndarray:
    """`.bae` bytes → uint8 image (H×W×3, or H×W for gray), by a shipped model or one of
    `models`."""
    return decode_parsed([container.unpack(bytes(data))], extra=models)[0]


def torch_installed() -> bool:
    """Whether torch can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def handles(parsed: list[tuple[container.Header, bytes]], model: str | None) -> bool:
    """Whether these files decode here to the torch decoder's pixels: not with a run folder
    as `model`, nor (while torch is installed) by a model whose networks are not exact.
    Unknown models count as handled: the error is the same."""
    stored = model is None or canonical(model) in zoo_entries() or model.endswith(".json")
    if not stored or (model is not None and model.endswith(".json") and not Path(model).is_file()):
        return False  # a run folder, or no such file: torch's decoder, and its error
    if not torch_installed():
        return True
    try:
        decoders = {decoder_for(header.model_id, model) for header, _ in parsed}
    except BlendaeError:
        return True
    return all(decoder.exact for decoder in decoders)


def decode_parsed(
    parsed: list[tuple[container.Header, bytes]],
    model: str | None = None,
    names: Sequence[str] | None = None,
    extra: Sequence[Decoder] = (),
) -> list[np.ndarray]:
    """Unpacked files → uint8 images, as `codec.images.decompress_parsed`: every size and
    model checked before any decoding, same-size files sharing network calls, a failure
    naming the first bad file (`names`: one per file)."""
    named = naming(names)
    groups = limits.groups(parsed, named)
    out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(parsed)
    decoders = {key: decoder_for(key[0], model, extra) for key in groups}  # refuse first
    for key, members in groups.items():
        limits.check_made_by(parsed, members, decoders[key].model_id, named)
    for key, members in groups.items():
        decoder, (_, h, w, quality, patch) = decoders[key], key
        check_quality(decoder.variable_rate, quality, named, members[0])
        size = (h + -h % decoder.stride, w + -w % decoder.stride)
        rows = columns = shared = 0
        if patch is not None:  # k = rows · columns patches to a string
            check_patch(decoder.name, decoder.patches, decoder.stride, patch, named, members[0])
            (rows, columns), size = limits.grid(h, w, patch), (patch, patch)
            shared = rows * columns
        for chunk in batches(members, max(shared, 1) * size[0] * size[1]):
            strings = [one for (one,) in limits.strings_of(parsed, chunk, 1, named)]
            x_hat = _decode_chunk(decoder, chunk, strings, size, quality, shared, named)
            if shared:  # (B·k, p, p, 3) → (B, rows·p, columns·p, 3)
                x_hat = x_hat.reshape(-1, rows, columns, *size, 3).transpose(0, 1, 3, 2, 4, 5)
                x_hat = x_hat.reshape(-1, rows * size[0], columns * size[1], 3)
            x_hat = x_hat[:, :h, :w]
            for k, i in enumerate(chunk):
                channels = parsed[i][0].channels
                image = to_uint8(x_hat[k : k + 1], decoder.preset, channels)[0]
                out[i] = image[..., 0] if channels == 1 else image
    return out


def _decode_chunk(
    decoder: Decoder,
    chunk: list[int],
    strings: list[bytes],
    size: tuple[int, int],
    quality: int | None,
    shared: int,
    named: Named,
) -> np.ndarray:
    """Decode same-size files together (`shared` patches each, or whole); if one is bad,
    raise the first bad one's error."""
    try:
        return decoder.decode(strings, size, quality, shared)
    except BlendaeError:
        for i, one in zip(chunk, strings, strict=True):
            try:
                decoder.decode([one], size, quality, shared)
            except BlendaeError as exc:
                raise named(i, exc) from exc
        raise
