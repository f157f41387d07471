"""compress/decompress: exact round trips, any size, gray and RGB, files and folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blendae import codec as api
from blendae.codec import container, loader, zoo_entries
from blendae.errors import BlendaeError
from conftest import make_codec_run


@pytest.fixture(scope="module")
def run(codec_run: str) -> str:
    return codec_run


def smooth_images(n: int, h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """Blurry random images: closer to photos than white noise, so rates stay realistic."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, c, max(h // 4, 1), max(w // 4, 1))).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small), size=(h, w), mode="bilinear")
    return big.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("model", [None, *sorted(zoo_entries())[:1]])
def test_round_trip_equals_the_model_and_repeats(run: str, model: str | None) -> None:
    """Decoding gives exactly the model's evaluation forward pass (rounded to pixels)."""
    from blendae.codec.images import reconstruct

    name = run if model is None else model
    images = smooth_images(8, 32, 32)
    files = api.compress_batch(list(images), name)
    assert files == api.compress_batch(list(images), name)  # byte-identical, run after run
    decoded = np.stack(api.decompress_batch(files, name))
    assert np.array_equal(decoded, np.stack(api.decompress_batch(files, name)))
    assert np.array_equal(decoded, reconstruct(list(images), name))


@pytest.mark.parametrize(("h", "w"), [(1, 1), (5, 37), (33, 32), (17, 4)])
def test_any_size_gray_and_rgb(run: str, h: int, w: int) -> None:
    rgb = smooth_images(1, h, w)[0]
    out = api.decompress(api.compress(rgb, run), run)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    gray = rgb[:, :, 0]
    for image in (gray, gray[:, :, None]):
        out = api.decompress(api.compress(image, run), run)
        assert out.shape == (h, w)


def test_bad_images(run: str) -> None:
    with pytest.raises(BlendaeError, match="uint8"):
        api.compress(np.zeros((4, 4, 3), np.float32), run)
    with pytest.raises(BlendaeError, match="H×W×3"):
        api.compress(np.zeros((4, 4, 4), np.uint8), run)
    with pytest.raises(BlendaeError, match="size 4x0"):
        api.compress(np.zeros((0, 4), np.uint8), run)
    with pytest.raises(BlendaeError, match="size 3000x3000"):
        api.compress(np.zeros((3000, 3000), np.uint8), run)


def test_unknown_model() -> None:
    with pytest.raises(BlendaeError, match="unknown codec model 'nope'"):
        api.compress(np.zeros((4, 4), np.uint8), "nope")


def test_paths(run: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    images = smooth_images(3, 20, 24)
    for i, image in enumerate(images):
        Image.fromarray(image).save(src / f"im{i}.png")
    Image.fromarray(images[0][:, :, 0]).save(src / "gray.png")
    baes = api.compress_files([src], tmp_path / "bae", model=run).written
    assert [p.name for p in baes] == ["gray.bae", "im0.bae", "im1.bae", "im2.bae"]
    pngs = api.decompress_files([tmp_path / "bae"], tmp_path / "out", model=run).written
    assert [p.name for p in pngs] == ["gray.png", "im0.png", "im1.png", "im2.png"]
    assert np.asarray(Image.open(pngs[0])).shape == (20, 24)
    assert np.asarray(Image.open(pngs[1])).shape == (20, 24, 3)
    one = api.compress_files([src / "im1.png"], tmp_path / "one.bae", model=run).written
    assert one == [tmp_path / "one.bae"]
    back = api.decompress_files(one, tmp_path / "one.png", model=run).written
    assert np.array_equal(np.asarray(Image.open(back[0])), np.asarray(Image.open(pngs[2])))
    with pytest.raises(BlendaeError, match="does not exist"):
        api.compress_files([tmp_path / "missing.png"], tmp_path / "x", model=run)
    (src / "broken.png").write_bytes(b"not an image")
    with pytest.raises(BlendaeError, match=r"broken\.png"):
        api.compress_files([src], tmp_path / "x", model=run)
    (tmp_path / "bae" / "junk.bae").write_bytes(b"junk")
    with pytest.raises(BlendaeError, match=r"junk\.bae: not a \.bae file"):
        api.decompress_files([tmp_path / "bae"], tmp_path / "y", model=run)


def test_shipped_models_load_and_are_distinct() -> None:
    entries = zoo_entries()
    assert api.DEFAULT in entries
    ids = {api.load_codec(name).model_id.hex() for name in entries}
    assert ids == {meta["id"] for meta in entries.values()} and len(ids) == len(entries)
    size = sum(p.stat().st_size for p in loader.zoo_folder().iterdir() if p.is_file())
    assert size < 10 * 2**20


@pytest.mark.mirror
def test_default_model_on_blended_test_images() -> None:
    from blendae.data import load_blended, to_pixels

    splits = load_blended("unit", mirror=os.environ["BLENDAE_MIRROR"], progress=False)
    pixels = to_pixels(splits.test[:200], "unit").round().clamp(0, 255).byte()
    images = pixels.permute(0, 2, 3, 1).numpy()
    files = api.compress_batch(list(images))
    decoded = np.stack(api.decompress_batch(files))
    bpp = np.mean([len(f) * 8 / (32 * 32) for f in files])
    psnr = 10 * np.log10(255**2 / np.mean((decoded.astype(float) - images) ** 2))
    assert 0.5 < bpp < 3 and psnr > 28, (bpp, psnr)


def test_a_run_saved_before_update_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from blendae.models.conv import ConvAutoencoder
    from blendae.models.factorized import FactorizedPrior

    (tmp_path / "config.json").write_text('{"model": "factorized", "model_args": {"N": 8, "M": 4}}')
    save_file(FactorizedPrior(N=8, M=4).state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(BlendaeError, match=r"no coding tables \(saved before update\(\)\)"):
        api.load_codec(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model": "conv"}')
    save_file(ConvAutoencoder().state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(BlendaeError, match="is not a codec"):
        api.load_codec(str(tmp_path))


def test_a_codec_trained_in_the_seed_space_codes_in_its_space(tmp_path: Path) -> None:
    """The codec converts pixels into the space the model was trained in, and back."""
    from blendae.data import from_pixels, to_pixels

    run = make_codec_run(tmp_path / "seed-run", preset="seed")
    images = smooth_images(4, 32, 32)
    decoded = np.stack(api.decompress_batch(api.compress_batch(list(images), run), run))
    model = api.load_codec(run).model
    x = from_pixels(torch.from_numpy(images).permute(0, 3, 1, 2).float(), "seed")
    with torch.inference_mode():
        x_hat = model(x.contiguous(memory_format=torch.channels_last))["x_hat"]
    expected = to_pixels(x_hat, "seed").clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(decoded.astype(int) - expected).max() <= 1
    # Read as unit-space inputs, the same model codes the colours wrongly: the space matters.
    wrong = to_pixels(model(x / 1)["x_hat"], "unit").clamp(0, 255).round().byte()
    assert not np.array_equal(wrong.permute(0, 2, 3, 1).numpy(), decoded)


BASELINE = Path(__file__).parents[1] / "benchmarks" / "baseline"


@pytest.mark.parametrize("release", ["hyperprior-0.3", "checkerboard-0.4"])
def test_files_written_by_earlier_releases_decode_to_the_same_pixels(release: str) -> None:
    """Files made by an earlier release's q3 (its zoo kept in benchmarks/baseline/RELEASE)
    decode to the pixels that release decoded them to (their digests, recorded by it), bit
    for bit."""
    import hashlib

    data = Path(__file__).parent / "data"
    expected = json.loads((data / f"{release}.json").read_text())
    model = str(BASELINE / release / "q3.json")
    for name, want in expected.items():
        decoded = api.decompress((data / name).read_bytes(), model)
        assert list(decoded.shape) == want["shape"]
        assert hashlib.sha256(decoded.tobytes()).hexdigest() == want["sha256"]
        # Without --model, the error names the model the file needs and where it is kept.
        with pytest.raises(BlendaeError, match=f"--model benchmarks/baseline/{release}/q3.json"):
            api.decompress((data / name).read_bytes())


def test_files_written_by_0_5_decode_to_its_pixels() -> None:
    """Two files 0.5's q3 wrote decode, with today's shipped q3, to the pixels 0.5 decoded
    them to (recorded by 0.5). 0.6's IGDN takes a correctly rounded square root where 0.5
    took torch's; of 2,600 files 0.5 wrote, 7 decode one level apart in a few values (see
    the README), so these two are a floor, not a proof for every file."""
    import hashlib

    data = Path(__file__).parent / "data"
    for name, want in json.loads((data / "zoo-0.5.json").read_text()).items():
        decoded = api.decompress((data / name).read_bytes())
        assert list(decoded.shape) == want["shape"]
        assert hashlib.sha256(decoded.tobytes()).hexdigest() == want["sha256"]


@pytest.mark.parametrize(
    ("record", "version"),
    [("general-0.7.json", 2), ("format3-0.8.json", 3), ("patches-0.9.json", 4)],
)
def test_files_the_shipped_models_wrote_decode_to_their_pixels(record: str, version: int) -> None:
    """0.7's version-2 files of the general model (quality 25 and 90, RGB and gray), 0.8's
    version-3 files (the general model's, and a gray 28×28 one of q3; a 40×56 one coded
    whole) and 0.9's version-4 files (72×100, gray 70×33 and q3's 64×64, in 32×32 patches)
    decode to the pixels recorded when they were written: decoders, gain tables included,
    stay."""
    import hashlib

    data = Path(__file__).parent / "data"
    for name, want in json.loads((data / record).read_text()).items():
        file = (data / name).read_bytes()
        assert file[2] == version and container.unpack(file)[0].quality == want["quality"]
        decoded = api.decompress(file)
        assert list(decoded.shape) == want["shape"]
        assert hashlib.sha256(decoded.tobytes()).hexdigest() == want["sha256"]


def test_the_record_of_earlier_models_lists_every_kept_one_and_no_shipped_one() -> None:
    """zoo/earlier.json (id → release, name, path) matches benchmarks/baseline exactly."""
    earlier = json.loads((loader.zoo_folder() / "earlier.json").read_text())
    kept = {}
    for meta_path in sorted(BASELINE.glob("*/q*.json")):
        meta = json.loads(meta_path.read_text())
        kept[meta["id"]] = f"benchmarks/baseline/{meta_path.parent.name}/{meta_path.name}"
    assert {ident: e["path"] for ident, e in earlier.items()} == kept
    assert not set(earlier) & {meta["id"] for meta in zoo_entries().values()}


def test_a_model_stored_like_the_zoo_codes_from_its_json(tmp_path: Path) -> None:
    """The 0.2 factorized models (the benchmark's baseline) load from NAME.json."""
    import shutil

    baseline = BASELINE / "factorized-0.2" / "q0.json"
    images = list(smooth_images(3, 32, 32))
    files = api.compress_batch(images, str(baseline))
    ident = bytes.fromhex(json.loads(baseline.read_text())["id"])
    assert all(container.made_by(container.unpack(f)[0], ident) for f in files)
    assert len(api.decompress_batch(files, str(baseline))) == 3
    forged = tmp_path / "q0.json"
    shutil.copy(baseline.with_suffix(".safetensors"), forged.with_suffix(".safetensors"))
    forged.write_text(baseline.read_text().replace('"id": "', '"id": "00'))
    with pytest.raises(BlendaeError, match="do not match its id"):
        api.compress_batch(images, str(forged))
