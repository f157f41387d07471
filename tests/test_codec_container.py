"""The .bae format and its decoder under truncation, corruption and fuzzing."""

from __future__ import annotations

import binascii
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendae import codec as api
from blendae.codec import container as stream
from blendae.codec.zoo import zoo_folder
from blendae.errors import BlendaeError
from conftest import make_codec_run

FIXTURES_OK = [HealthCheck.function_scoped_fixture]  # the fixtures are module-scoped, reused


@pytest.fixture(scope="module")
def run(codec_run: str) -> str:
    return codec_run


@pytest.fixture(scope="module")
def valid(run: str) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return api.compress(image, run)


def test_header_round_trip_and_size() -> None:
    ident = b"\x01\x02\x03\x04"
    for h, w, channels, quality, size in [(32, 200, 3, None, 2 + 1 + 2 + 1 + 1 + 2 + 2)]:
        header = stream.Header(ident, h, w, channels, quality)
        data = stream.pack(header, [b"payload"])
        assert data[2] == stream.VERSION_COMPACT
        assert len(data) == size + 7  # 2h + 0 needs 1 varint byte, the width 200 two
        parsed, payload = stream.unpack(data)
        assert (parsed.model_id, parsed.height, parsed.width) == (ident[:2], h, w)
        assert (parsed.channels, parsed.quality) == (channels, quality)
        assert payload == b"payload" and stream.split_strings(payload, 1) == [b"payload"]
        assert stream.made_by(parsed, ident)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quality", [None, 0, 66, 100])
def test_a_square_tiny_image_has_a_9_byte_header(channels: int, quality: int | None) -> None:
    ident = bytes([7, 8, 9, 10])
    data = stream.pack(stream.Header(ident, 32, 32, channels, quality), [b"xyz"])
    assert len(data) == 9 + 3
    parsed, _ = stream.unpack(data)
    assert (parsed.height, parsed.width, parsed.channels, parsed.quality) == (
        32,
        32,
        channels,
        quality,
    )
    side = stream.Header(ident, stream.MAX_SIDE, stream.MAX_SIDE, channels, quality)
    parsed, _ = stream.unpack(stream.pack(side, [b""]))
    assert (parsed.height, parsed.width) == (stream.MAX_SIDE, stream.MAX_SIDE)


def test_the_checksum_covers_the_whole_model_id() -> None:
    """Version 3 stores 2 bytes of the id; a model whose id only starts alike fails."""
    data = stream.pack(stream.Header(b"\xaa\xbb\xcc\xdd", 28, 28, 1), [b"payload"])
    parsed, _ = stream.unpack(data)
    assert stream.names(parsed.model_id, b"\xaa\xbb\x00\x00")
    assert stream.made_by(parsed, b"\xaa\xbb\xcc\xdd")
    assert not stream.made_by(parsed, b"\xaa\xbb\xcc\xde")
    assert not stream.made_by(parsed, b"\xaa\xbc\xcc\xdd")


def test_version_3_forged_fields() -> None:
    """Fields a valid checksum may still carry (only a forgery can): clear errors."""

    def forged(body: bytes) -> bytes:
        head = stream.MAGIC + bytes([stream.VERSION_COMPACT]) + b"\x01\x02" + body
        crc = binascii.crc_hqx(b"\x01\x02\x03\x04", binascii.crc_hqx(head, 0))
        return head + crc.to_bytes(2, "little")

    with pytest.raises(BlendaeError, match="quality 101"):
        stream.unpack(forged(bytes([101, 65])))
    with pytest.raises(BlendaeError, match="image size 0x0"):
        stream.unpack(forged(bytes([127, 1])))
    with pytest.raises(BlendaeError, match="image size 65536x65536"):
        stream.unpack(forged(bytes([127]) + stream._varint(2 * 65536 + 1)))
    with pytest.raises(BlendaeError, match="square image's width"):
        stream.unpack(forged(bytes([127, 64, 32])))
    with pytest.raises(BlendaeError, match="non-canonical size"):
        stream.unpack(forged(bytes([127, 0xC0, 0x00])))
    parsed, _ = stream.unpack(forged(bytes([0x80 | 127, 64, 33])))
    assert (parsed.channels, parsed.quality, parsed.height, parsed.width) == (1, None, 32, 33)


def test_several_strings_round_trip() -> None:
    header = stream.Header(bytes(4), 8, 8, 1)
    strings = [b"z" * 3, b"", b"y" * 200]
    _, payload = stream.unpack(stream.pack(header, strings))
    assert stream.split_strings(payload, 3) == strings
    with pytest.raises(BlendaeError, match="truncated"):
        stream.split_strings(payload[:3], 3)


def test_every_truncation_is_a_clear_error(run: str, valid: bytes) -> None:
    for n in range(len(valid)):
        with pytest.raises(BlendaeError, match=r"truncated|not a \.bae|checksum"):
            api.decompress(valid[:n], run)


def test_every_single_byte_change_is_detected(run: str, valid: bytes) -> None:
    for i in range(len(valid)):
        bad = bytearray(valid)
        bad[i] ^= 0x5A
        with pytest.raises(BlendaeError):
            api.decompress(bytes(bad), run)


def test_foreign_and_future_files(run: str, valid: bytes) -> None:
    with pytest.raises(BlendaeError, match=r"not a \.bae file"):
        api.decompress(b"\x89PNG\r\n\x1a\n" + bytes(40), run)
    future = bytearray(valid)
    future[2] = stream.VERSION_PATCHES + 1
    with pytest.raises(BlendaeError, match="version 5 is not supported"):
        api.decompress(bytes(future), run)


def test_a_file_from_another_model(run: str, valid: bytes, tmp_path: Path) -> None:
    other = make_codec_run(tmp_path / "other", seed=1)
    with pytest.raises(BlendaeError, match="made by codec model"):
        api.decompress(valid, other)
    with pytest.raises(BlendaeError, match="made by codec model"):
        api.decompress(valid)  # no model given: not a shipped one either


def test_valid_checksum_over_bad_fields(run: str) -> None:
    """Forged files (valid CRC) with impossible fields: errors, not a huge decode."""
    head = stream.MAGIC + bytes([stream.VERSION]) + bytes(4) + bytes([2, 32, 32])
    forged = head + zlib.crc32(head).to_bytes(4, "little")
    with pytest.raises(BlendaeError, match="2 channels"):
        api.decompress(forged, run)
    side = stream._varint(stream.MAX_SIDE)
    head = stream.MAGIC + bytes([stream.VERSION]) + bytes(4) + bytes([3]) + side + side
    forged = head + zlib.crc32(head).to_bytes(4, "little")
    with pytest.raises(BlendaeError, match="image size 65535x65535"):
        api.decompress(forged, run)


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes(run: str, data: bytes) -> None:
    with pytest.raises(BlendaeError):
        api.decompress(data, run)


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES_OK)
@given(st.data())
def test_fuzz_mutated_files(run: str, valid: bytes, data: st.DataObject) -> None:
    """Splices, insertions and overwrites of a valid file: an error, or the same image."""
    bad = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(bad)))
        chunk = data.draw(st.binary(min_size=0, max_size=8))
        cut = data.draw(st.integers(0, 8))
        bad[pos : pos + cut] = chunk
    if bytes(bad) == valid:
        return
    with pytest.raises(BlendaeError):
        api.decompress(bytes(bad), run)


def test_the_shipped_models_differ_in_their_stored_ids() -> None:
    """Version 3 files store 2 bytes of the id: shipped models must differ there (and from
    the models earlier releases shipped), so a file picks exactly one."""
    ids = [meta["id"] for meta in api.zoo_entries().values()]
    earlier = json.loads((zoo_folder() / "earlier.json").read_text(encoding="utf-8"))
    shorts = [bytes.fromhex(i)[: stream.SHORT_ID_BYTES] for i in [*ids, *earlier]]
    assert len(set(shorts)) == len(shorts)
