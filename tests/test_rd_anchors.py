"""The ISO-BMFF `mdat` parser that benchmarks/rd.py uses to count AVIF payload bits."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from benchmarks.rd import mdat_payload_size
from PIL import Image, features


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def large_box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 1) + kind + struct.pack(">Q", 16 + len(body)) + body


FTYP = box(b"ftyp", b"avif\0\0\0\0avifmif1")


def test_counts_mdat_bodies_only():
    data = FTYP + box(b"meta", b"\0" * 30) + box(b"mdat", b"x" * 17)
    assert mdat_payload_size(data) == 17


def test_sums_several_mdat_boxes_and_skips_others():
    data = FTYP + box(b"mdat", b"a" * 5) + box(b"free", b"\0" * 9) + box(b"mdat", b"b" * 7)
    assert mdat_payload_size(data) == 12


def test_64_bit_largesize():
    assert mdat_payload_size(FTYP + large_box(b"mdat", b"z" * 40)) == 40
    assert mdat_payload_size(FTYP + large_box(b"skip", b"") + box(b"mdat", b"z")) == 1


def test_size_zero_runs_to_the_end():
    data = FTYP + box(b"meta", b"\0" * 4) + struct.pack(">I", 0) + b"mdat" + b"p" * 23
    assert mdat_payload_size(data) == 23
    assert mdat_payload_size(FTYP + struct.pack(">I", 0) + b"mdat") == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        FTYP,  # no mdat
        box(b"mdat", b"x"),  # no ftyp first
        FTYP + b"\0\0\0",  # truncated header
        FTYP + struct.pack(">I", 4) + b"mdat",  # size under its header
        FTYP + struct.pack(">I", 1) + b"mdat" + b"\0" * 4,  # truncated largesize
        FTYP + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 15),  # largesize < 16
        FTYP + struct.pack(">I", 100) + b"mdat" + b"x" * 10,  # runs past the end
        FTYP + box(b"mdat", b"x" * 4)[:-1],  # truncated body
        FTYP + large_box(b"mdat", b"x")[:-1],
    ],
)
def test_refuses_malformed_input(data: bytes):
    with pytest.raises(ValueError):
        mdat_payload_size(data)


@pytest.mark.skipif(not features.check("avif"), reason="Pillow without AVIF")
def test_real_avif_file():
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        buf, format="AVIF", quality=50
    )
    data = buf.getvalue()
    payload = mdat_payload_size(data)
    assert 0 < payload < len(data) - 100  # the container is a few hundred bytes at 32×32
    # the mdat box closes the file: its body is the file's last `payload` bytes
    head = data[: len(data) - payload]
    assert head[-4:] == b"mdat"
