"""The `.bae` container: a 9-byte header at 32×32, then the model's coded byte strings.

Version 3 (written since blendae 0.8) packs the image's shape, gray flag and quality into as
few bytes as the image needs and checks the file with a CRC-16 that also covers the full
model id, of which it stores two bytes. At 32×32 a header is a large part of a file (about
4 % of a file at the default quality), so it is kept to what decoding needs. Versions 1 and
2 (a 14- or 15-byte header with a CRC-32) are still read: every file earlier releases wrote
decodes as before. Version 4 (0.9 and later) is version 3 plus one byte, written only for an
image coded in patches (a model trained on 32×32 images codes a larger one as 32×32 patches,
see `codec.images`): the patch side in units of 16 pixels.

See docs/format.md for the byte layout. Parsing is strict: every malformed input becomes a
`BlendaeError` that says what is wrong, before any decoding work is done.
"""

from __future__ import annotations

import binascii
import zlib
from dataclasses import dataclass

from blendae.errors import BlendaeError

MAGIC = b"\xba\xe1"
VERSION = 1  # 0.3–0.7, fixed-rate models' files
VERSION_QUALITY = 2  # 0.7, variable-rate models' files: a quality byte after the channels
VERSION_COMPACT = 3  # 0.8 and later, every model's files
VERSION_PATCHES = 4  # 0.9 and later, an image coded in patches: version 3 + the patch side
VERSIONS = (VERSION, VERSION_QUALITY, VERSION_COMPACT, VERSION_PATCHES)
PATCH_UNIT = 16  # version 4 stores the patch side in these units
MAX_PATCH = 256  # the largest patch side a file may name (it bounds a forged file's work)
MAX_QUALITY = 100
NO_QUALITY = 127  # version 3's quality field of a fixed-rate model's file
GRAY = 0x80  # version 3's image byte: set for a gray (1-channel) image
MODEL_ID_BYTES = 4  # a model's id (`blendae.codec.loader.model_id`)
SHORT_ID_BYTES = 2  # what version 3 stores of it; its checksum covers all 4
MAX_SIDE = 65535  # height and width are varints of at most 3 bytes
CHANNELS = (1, 3)
CHECKSUM_MISMATCH = "corrupt or truncated .bae file: checksum mismatch"


@dataclass(frozen=True)
class Header:
    """What a `.bae` file says about its image and the model that coded it."""

    # MODEL_ID_BYTES bytes to `pack`; what the file stores (SHORT_ID_BYTES in version 3)
    # from `unpack`: match it with `made_by`
    model_id: bytes
    height: int
    width: int
    channels: int  # 1 (gray) or 3 (RGB)
    quality: int | None = None  # 0..100 for a variable-rate model's file
    patch: int | None = None  # the side of the patches the image was coded in (version 4)
    # version 3: (stored CRC-16, CRC-16 of the header and payload) to finish with the id
    checksum: tuple[int, int] | None = None


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit = more bytes follow."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(3):
        if pos + i >= len(data):
            raise BlendaeError(f"truncated .bae file: it ends inside the {what} field")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise BlendaeError(f"corrupt .bae header: non-canonical {what} field")
            return value, pos + i + 1
    raise BlendaeError(f"corrupt .bae header: {what} field longer than 3 bytes")


def pack(header: Header, strings: list[bytes]) -> bytes:
    """Header + a model's byte strings for one image → version 3 file bytes (version 4 for
    an image coded in patches).

    One string is stored as is; several are preceded by the varint lengths of all but the
    last. The CRC-16 covers every other byte, then the model's full id.
    """
    assert len(header.model_id) == MODEL_ID_BYTES and header.channels in CHANNELS
    assert 1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE
    assert header.quality is None or 0 <= header.quality <= MAX_QUALITY
    assert header.patch is None or (header.patch % PATCH_UNIT == 0 and header.patch <= MAX_PATCH)
    payload = b"".join(_varint(len(s)) for s in strings[:-1]) + b"".join(strings)
    quality = NO_QUALITY if header.quality is None else header.quality
    square = header.width == header.height
    head = (
        MAGIC
        + bytes([VERSION_COMPACT if header.patch is None else VERSION_PATCHES])
        + header.model_id[:SHORT_ID_BYTES]
        + bytes([quality | (GRAY if header.channels == 1 else 0)])
        + _varint(2 * header.height + square)
        + (b"" if square else _varint(header.width))
        + (b"" if header.patch is None else bytes([header.patch // PATCH_UNIT]))
    )
    crc = binascii.crc_hqx(header.model_id, binascii.crc_hqx(payload, binascii.crc_hqx(head, 0)))
    return head + crc.to_bytes(2, "little") + payload


def unpack(data: bytes) -> tuple[Header, bytes]:
    """File bytes → (header, payload); raises `BlendaeError` on any defect it can see
    without the model (a version 3 file's checksum is finished by `made_by`)."""
    if len(data) < len(MAGIC) + 1:
        raise BlendaeError(f"not a .bae file: only {len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise BlendaeError(
            f"not a .bae file: starts with {data[:2].hex()} instead of {MAGIC.hex()}"
        )
    version = data[len(MAGIC)]
    if version not in VERSIONS:
        raise BlendaeError(
            f".bae format version {version} is not supported: this blendae reads versions "
            f"1 to {VERSION_PATCHES}; decode it with the blendae release that wrote it"
        )
    if version >= VERSION_COMPACT:
        return _unpack_compact(data, version == VERSION_PATCHES)
    pos = len(MAGIC) + 1
    fixed = MODEL_ID_BYTES + 1 + (version == VERSION_QUALITY)
    if len(data) < pos + fixed:
        raise BlendaeError("truncated .bae file: it ends inside the header")
    model_id = data[pos : pos + MODEL_ID_BYTES]
    channels = data[pos + MODEL_ID_BYTES]
    quality = data[pos + MODEL_ID_BYTES + 1] if version == VERSION_QUALITY else None
    pos += fixed
    height, pos = _read_varint(data, pos, "height")
    width, pos = _read_varint(data, pos, "width")
    if len(data) < pos + 4:
        raise BlendaeError("truncated .bae file: it ends inside the checksum")
    stored_crc = int.from_bytes(data[pos : pos + 4], "little")
    payload = data[pos + 4 :]
    if zlib.crc32(payload, zlib.crc32(data[:pos])) != stored_crc:
        raise BlendaeError(CHECKSUM_MISMATCH)
    # A valid checksum over invalid fields means a writer bug or deliberate forgery.
    _check_fields(channels, height, width, quality)
    return Header(model_id, height, width, channels, quality), payload


def _unpack_compact(data: bytes, patched: bool) -> tuple[Header, bytes]:
    pos = len(MAGIC) + 1 + SHORT_ID_BYTES + 1
    if len(data) < pos:
        raise BlendaeError("truncated .bae file: it ends inside the header")
    model_id = data[len(MAGIC) + 1 : pos - 1]
    image = data[pos - 1]
    size, pos = _read_varint(data, pos, "size")
    height = size >> 1
    width = height
    if not size & 1:
        width, pos = _read_varint(data, pos, "width")
        if width == height:
            raise BlendaeError("corrupt .bae header: a square image's width stored")
    patch = None
    if patched:
        if len(data) <= pos:
            raise BlendaeError("truncated .bae file: it ends inside the patch field")
        patch, pos = data[pos] * PATCH_UNIT, pos + 1
        if not 0 < patch <= MAX_PATCH or not (height > patch or width > patch):
            raise BlendaeError(
                f"corrupt .bae header: {height}x{width} image in patches of side {patch} "
                f"(a side 16..{MAX_PATCH}, smaller than the image)"
            )
    if len(data) < pos + 2:
        raise BlendaeError("truncated .bae file: it ends inside the checksum")
    stored = int.from_bytes(data[pos : pos + 2], "little")
    payload = data[pos + 2 :]
    partial = binascii.crc_hqx(payload, binascii.crc_hqx(data[:pos], 0))
    quality = image & ~GRAY
    if quality == NO_QUALITY:
        quality = None
    channels = 1 if image & GRAY else 3
    _check_fields(channels, height, width, quality)
    return Header(model_id, height, width, channels, quality, patch, (stored, partial)), payload


def _check_fields(channels: int, height: int, width: int, quality: int | None) -> None:
    if channels not in CHANNELS:
        raise BlendaeError(f"corrupt .bae header: {channels} channels (expected 1 or 3)")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BlendaeError(f"corrupt .bae header: image size {height}x{width}")
    if quality is not None and quality > MAX_QUALITY:
        raise BlendaeError(f"corrupt .bae header: quality {quality} (expected 0..100)")


def names(header_id: bytes, model_id: bytes) -> bool:
    """Whether a file's stored model id names the model with (full) id `model_id`."""
    return model_id[: len(header_id)] == header_id


def made_by(header: Header, model_id: bytes) -> bool:
    """Whether the model with id `model_id` wrote the file: its id matches, and a version 3
    file's checksum, finished with that id, holds. A mismatch there is a corrupt file (or,
    once in 65,536, another model whose id starts alike)."""
    if not names(header.model_id, model_id):
        return False
    if header.checksum is None:
        return True  # versions 1 and 2: checked in full by `unpack`
    stored, partial = header.checksum
    return binascii.crc_hqx(model_id, partial) == stored


def split_strings(payload: bytes, count: int) -> list[bytes]:
    """The payload of `pack` → its `count` byte strings."""
    lengths = []
    pos = 0
    for i in range(count - 1):
        length, pos = _read_varint(payload, pos, f"length of string {i}")
        lengths.append(length)
    strings = []
    for length in lengths:
        if pos + length > len(payload):
            raise BlendaeError("truncated .bae payload: a string ends past the file")
        strings.append(payload[pos : pos + length])
        pos += length
    return [*strings, payload[pos:]]
