"""Images larger than the shipped models' 32×32 training images are coded as 32×32 patches in
one ANS stream (format version 4): both decoders give the same pixels, the evaluation
forward pass gives them too, the stream costs fewer bytes than a file per patch, a larger
image costs far fewer bits than coding it whole, and forged or damaged files are errors."""

from __future__ import annotations

import binascii
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.patches import whole_model

from blendae import codec as api
from blendae.codec import container, decode
from blendae.codec.images import from_patches, reconstruct, to_patches
from blendae.codec.loader import load_codec
from blendae.codec.zoo import zoo_entries
from blendae.errors import BlendaeError


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with a few edges: what a larger photo looks like to the model."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.float64)
    x = torch.from_numpy(coarse).permute(2, 0, 1)[None]
    up = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    image = up[0].permute(1, 2, 0).numpy()
    image[h // 3 :, : w // 2] *= 0.5  # an edge
    return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def test_patches_split_and_join_exactly() -> None:
    x = torch.arange(3 * 64 * 96, dtype=torch.float32).reshape(1, 3, 64, 96)
    patches = to_patches(x, 32)
    assert patches.shape == (6, 3, 32, 32)
    assert torch.equal(patches[4], x[0, :, 32:, 32:64])  # row-major
    assert torch.equal(from_patches(patches, 2, 3), x)


@pytest.mark.parametrize(("model", "quality"), [("general", 0), ("general", 63), ("q3", None)])
def test_a_larger_image_is_coded_in_patches_and_both_decoders_agree(
    model: str, quality: int | None
) -> None:
    images = [photo_like(100, 75, 1), photo_like(33, 200, 2), photo_like(64, 64, 3)[:, :, 0]]
    files = api.compress_batch(images, model, quality)
    for data, image in zip(files, images, strict=True):
        header = container.unpack(data)[0]
        assert data[2] == container.VERSION_PATCHES and header.patch == 32
        assert (header.height, header.width) == image.shape[:2]
    by_torch = api.decompress_batch(files)
    here = decode.decode_parsed([container.unpack(f) for f in files])
    for image, a, b in zip(images, by_torch, here, strict=True):
        assert a.shape == image.shape and np.array_equal(a, b)
    # decoding is the evaluation forward pass, patch by patch
    assert np.array_equal(by_torch[0], reconstruct([images[0]], model, quality)[0])
    # an image that fits in one patch is coded whole, in version 3, as before
    small = api.compress(photo_like(32, 32), model, quality)
    assert small[2] == container.VERSION_COMPACT


def test_one_stream_costs_less_than_a_string_per_patch() -> None:
    """The patches share one ANS stream, each stage of every patch before the next: the
    same symbols as one string per patch, without a string's ending and length per patch."""
    codec = load_codec("general")
    x = to_patches(api.images.to_input([photo_like(96, 128)], codec, 32), 32)
    with torch.inference_mode():
        apart = codec.model.compress(x, 20)
        shared = codec.model.compress(x, 20, shared=len(x))
        assert len(shared) == 1
        assert len(shared[0][0]) < sum(len(s[0]) for s in apart)
        one = codec.model.decompress(shared, (32, 32), 20, shared=len(x))
        each = codec.model.decompress(apart, (32, 32), 20)
    assert torch.equal(one, each)


def test_same_size_images_share_network_calls_and_each_keeps_its_own_stream() -> None:
    """20 images of 64×80 (6 patches each) are coded and decoded in one batch, a string of
    6 patches per file; each file alone decodes to the same pixels, in both decoders."""
    images = [photo_like(64, 80, seed) for seed in range(20)]
    files = api.compress_batch(images, "general", 30)
    codec = load_codec("general")
    x = to_patches(api.images.to_input(images[:2], codec, 32), 32)
    with torch.inference_mode():
        two = codec.model.compress(x, 30, shared=6)
        assert len(two) == 2
        with pytest.raises(BlendaeError, match="do not split into streams of 5"):
            codec.model.compress(x, 30, shared=5)
        assert torch.equal(
            codec.model.decompress(two, (32, 32), 30, shared=6),
            torch.cat([codec.model.decompress([s], (32, 32), 30, shared=6) for s in two]),
        )
    together = api.decompress_batch(files)
    parsed = [container.unpack(f) for f in files]
    for a, b in zip(together, decode.decode_parsed(parsed), strict=True):
        assert np.array_equal(a, b)
    for data, image in zip(files[:3], together[:3], strict=True):
        assert np.array_equal(api.decompress(data), image)
        assert np.array_equal(decode.decode(data), image)
    # a damaged stream (under a valid checksum) among good ones: both decoders name it
    gid = bytes.fromhex(zoo_entries()["general"]["id"])
    header, payload = parsed[7]
    header = container.Header(gid, header.height, header.width, 3, 30, 32)
    parsed[7] = container.unpack(container.pack(header, [payload[:-8]]))
    names = [f"file{i}.bae" for i in range(len(parsed))]
    for decoder in (api.images.decompress_parsed, decode.decode_parsed):
        with pytest.raises(BlendaeError, match=r"^file7\.bae: corrupt \.bae payload"):
            decoder(parsed, None, names)


def test_patches_cost_far_fewer_bits_than_coding_a_larger_image_whole(tmp_path: Path) -> None:
    """The models never saw the inside of an image larger than 32×32 in training; coded
    whole, a smooth 128×128 image took more than twice the bits of its patches here, at a
    PSNR no better. Also: a model stored without "patch" still codes images whole."""
    image = photo_like(128, 128, 4)
    unpatched = whole_model(tmp_path)
    whole = api.compress(image, unpatched, 40)
    assert whole[2] == container.VERSION_COMPACT
    patched = api.compress(image, "general", 40)
    assert len(patched) < 0.7 * len(whole)

    def psnr(data: bytes) -> float:
        error = api.decompress(data, unpatched).astype(float) - image
        return float(10 * np.log10(255**2 / np.mean(error**2)))

    assert psnr(patched) > psnr(whole) - 0.5


def forge(model_id: bytes, h: int, w: int, quality: int, side: bytes, payload: bytes) -> bytes:
    """A version 4 file with any patch byte(s) under a valid checksum (a forgery)."""
    size = container._varint(2 * h + (h == w)) + (b"" if h == w else container._varint(w))
    head = container.MAGIC + bytes([container.VERSION_PATCHES]) + model_id[:2]
    head += bytes([quality]) + size + side
    crc = binascii.crc_hqx(model_id, binascii.crc_hqx(payload, binascii.crc_hqx(head, 0)))
    return head + crc.to_bytes(2, "little") + payload


def test_forged_and_damaged_patch_files_are_errors_in_both_decoders() -> None:
    image = photo_like(48, 80)
    data = api.compress(image, "general", 50)
    gid = bytes.fromhex(zoo_entries()["general"]["id"])
    payload = container.unpack(data)[1]
    assert forge(gid, 48, 80, 50, b"\x02", payload) == data
    cases = {
        "side 0": forge(gid, 48, 80, 50, b"\x00", payload),
        "side 272": forge(gid, 48, 80, 50, b"\x11", payload),
        "side 80, no smaller than the image": forge(gid, 48, 80, 50, b"\x05", payload),
        "side 32 of a 32x32 image": forge(gid, 32, 32, 50, b"\x02", payload),
    }
    for what, forged in cases.items():
        for decoder in (api.decompress, decode.decode):
            with pytest.raises(
                BlendaeError, match=r"corrupt \.bae header: .* in patches"
            ) as caught:
                decoder(forged)
            assert "(a side 16..256, smaller than the image)" in str(caught.value), what
    head = data[: len(data) - len(payload) - 2]
    for decoder in (api.decompress, decode.decode):
        with pytest.raises(BlendaeError, match="ends inside the patch field"):
            decoder(head[:-1])
        # another patch side than the encoder's: the stream does not parse as that
        with pytest.raises(BlendaeError, match="corrupt"):
            decoder(forge(gid, 48, 80, 50, b"\x01", payload))
    # a damaged stream, truncated or with one bit flipped: the same error or the same
    # pixels from both decoders
    rng = np.random.default_rng(0)
    errors = 0
    for k in range(40):
        body = bytearray(payload)
        if k % 2:
            body = body[: int(rng.integers(len(body)))]
        else:
            body[int(rng.integers(len(body)))] ^= 1 << int(rng.integers(8))
        damaged = forge(gid, 48, 80, 50, b"\x02", bytes(body))
        results: list[np.ndarray | str] = []
        for decoder in (api.decompress, decode.decode):
            try:
                results.append(decoder(damaged))
            except BlendaeError as exc:
                results.append(str(exc))
        if isinstance(results[0], str):
            errors += 1
            assert results[0] == results[1] and "corrupt .bae payload" in results[0]
        else:
            assert isinstance(results[1], np.ndarray) and np.array_equal(results[0], results[1])
    assert errors >= 15  # most damage is seen (the rest decodes alike in both)


def test_the_cli_codes_a_photo_in_patches(tmp_path: Path) -> None:
    """`blendae compress` → a version 4 file; `decompress` (the torch-free decoder, for a
    few files) gives exactly the torch API's pixels and the evaluation forward pass's."""
    from PIL import Image

    from blendae.cli import main

    image = photo_like(90, 130, 5)
    Image.fromarray(image).save(tmp_path / "photo.png")
    assert main(["compress", str(tmp_path / "photo.png"), "-o", str(tmp_path / "photo.bae")]) == 0
    data = (tmp_path / "photo.bae").read_bytes()
    assert data[2] == container.VERSION_PATCHES
    assert main(["decompress", str(tmp_path / "photo.bae"), "-o", str(tmp_path / "back.png")]) == 0
    back = np.asarray(Image.open(tmp_path / "back.png"))
    assert np.array_equal(back, api.decompress(data))
    assert np.array_equal(back, reconstruct([image])[0])
