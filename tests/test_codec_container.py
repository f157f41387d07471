"""The .bae format and its decoder under truncation, corruption and fuzzing."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendae import codec as api
from blendae.codec import container as stream
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
    header = stream.Header(b"\x01\x02\x03\x04", 32, 200, 3)
    data = stream.pack(header, [b"payload"])
    assert len(data) == 2 + 1 + 4 + 1 + 1 + 2 + 4 + 7  # 200 needs 2 varint bytes
    parsed, payload = stream.unpack(data)
    assert parsed == header and payload == b"payload"
    assert stream.split_strings(payload, 1) == [b"payload"]


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
    future[2] = stream.VERSION_QUALITY + 1
    with pytest.raises(BlendaeError, match="version 3 is not supported"):
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
