"""The `.bae` container: a 14-byte header at 32×32 (15 with a quality), then the model's
coded byte strings.

Version 1 files come from fixed-rate models; version 2 adds one byte after the channels,
the quality (0..100) a variable-rate model coded the image at. A fixed-rate model still
writes version 1, so its files stay byte for byte what earlier releases wrote.

See docs/format.md for the byte layout. Parsing is strict: every malformed input becomes a
`BlendaeError` that says what is wrong, before any decoding work is done.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from blendae.errors import BlendaeError

MAGIC = b"\xba\xe1"
VERSION = 1  # fixed-rate models' files
VERSION_QUALITY = 2  # variable-rate models' files: a quality byte after the channels
MAX_QUALITY = 100
MODEL_ID_BYTES = 4
MAX_SIDE = 65535  # height and width are varints of at most 3 bytes
CHANNELS = (1, 3)


@dataclass(frozen=True)
class Header:
    """What a `.bae` file says about its image and the model that coded it."""

    model_id: bytes  # MODEL_ID_BYTES bytes: see `blendae.codec.loader.model_id`
    height: int
    width: int
    channels: int  # 1 (gray) or 3 (RGB)
    quality: int | None = None  # 0..100 for a variable-rate model's file (version 2)


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
    """Header + a model's byte strings for one image → file bytes.

    One string is stored as is; several are preceded by the varint lengths of all but the
    last. The CRC-32 covers every other byte.
    """
    assert len(header.model_id) == MODEL_ID_BYTES and header.channels in CHANNELS
    assert 1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE
    assert header.quality is None or 0 <= header.quality <= MAX_QUALITY
    payload = b"".join(_varint(len(s)) for s in strings[:-1]) + b"".join(strings)
    quality = b"" if header.quality is None else bytes([header.quality])
    head = (
        MAGIC
        + bytes([VERSION if header.quality is None else VERSION_QUALITY])
        + header.model_id
        + bytes([header.channels])
        + quality
        + _varint(header.height)
        + _varint(header.width)
    )
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + crc.to_bytes(4, "little") + payload


def unpack(data: bytes) -> tuple[Header, bytes]:
    """File bytes → (header, payload); raises `BlendaeError` on any defect."""
    if len(data) < len(MAGIC) + 1:
        raise BlendaeError(f"not a .bae file: only {len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise BlendaeError(
            f"not a .bae file: starts with {data[:2].hex()} instead of {MAGIC.hex()}"
        )
    version = data[len(MAGIC)]
    if version not in (VERSION, VERSION_QUALITY):
        raise BlendaeError(
            f".bae format version {version} is not supported: this blendae reads versions "
            f"{VERSION} and {VERSION_QUALITY}; decode it with the blendae release that wrote it"
        )
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
        raise BlendaeError("corrupt or truncated .bae file: checksum mismatch")
    # A valid checksum over invalid fields means a writer bug or deliberate forgery.
    if channels not in CHANNELS:
        raise BlendaeError(f"corrupt .bae header: {channels} channels (expected 1 or 3)")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BlendaeError(f"corrupt .bae header: image size {height}x{width}")
    if quality is not None and quality > MAX_QUALITY:
        raise BlendaeError(f"corrupt .bae header: quality {quality} (expected 0..100)")
    return Header(model_id, height, width, channels, quality), payload


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
