"""Presets, resize, blending, the pixel map, and the cached splits of `load_blended`."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from blendae.data import (
    PRESETS,
    BlendedSplits,
    from_pixels,
    get_preset,
    load_blended,
    pixel_scale,
    to_pixels,
)
from blendae.data.blend import Preset, _all_finite, blend, mnist_to_rgb32, resize_bilinear
from blendae.data.formats import Counts, read_mnist
from blendae.data.sources import fetch
from blendae.errors import BlendaeError
from conftest import (
    CIFAR_BINARY,
    TinyDatasets,
    make_tiny_datasets,
    write_sha256sums,
    write_tiny_mirror,
)

RNG = np.random.default_rng(3)
# Pillow rounds to uint8 after each 1-D pass, so it differs from exact bilinear by up to
# one grey level; float32 arithmetic adds well under 1e-5.
PILLOW_ATOL = 1 / 255 + 1e-5


def numpy_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W) to (N, size, size), half-pixel centres, edges clamped,
    written independently of torch for the tests (upscaling only: no antialias)."""
    n_in = x.shape[-1]
    src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = src - i0
    rows = x[:, i0, :] * (1 - w)[:, None] + x[:, i1, :] * w[:, None]
    return rows[:, :, i0] * (1 - w) + rows[:, :, i1] * w


def numpy_blend(cifar: np.ndarray, mnist: np.ndarray, p: Preset) -> np.ndarray:
    """The blend, from its definition, in float64 NumPy."""
    c = cifar / 255.0
    m = np.repeat(numpy_bilinear(mnist / 255.0, 32)[:, None], 3, axis=1)
    shape = (1, 3, 1, 1)
    c = (c - np.reshape(p.cifar_mean, shape)) / np.reshape(p.cifar_std, shape)
    m = (m - np.reshape(p.mnist_mean, shape)) / np.reshape(p.mnist_std, shape)
    return (m + c) / 2


def pillow_resize(images: np.ndarray, size: int) -> np.ndarray:
    out = [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images]
    return np.stack(out).astype(np.float64) / 255


# ---------------------------------------------------------------- presets


def test_presets() -> None:
    seed, unit = get_preset("seed"), get_preset("unit")
    assert seed.cifar_mean == seed.cifar_std == (0.5, 0.5, 0.5)
    assert seed.mnist_mean == (0.485, 0.456, 0.406) and seed.mnist_std == (0.229, 0.224, 0.225)
    assert unit.cifar_mean == unit.mnist_mean == (0, 0, 0)
    assert unit.cifar_std == unit.mnist_std == (1, 1, 1)
    assert set(PRESETS) == {"seed", "unit"}
    with pytest.raises(BlendaeError, match=r"unknown preset 'imagenet'; valid presets: seed, unit"):
        get_preset("imagenet")


# ---------------------------------------------------------------- resize and blend


def test_resize_bilinear_matches_an_independent_numpy_bilinear() -> None:
    x = RNG.random((6, 28, 28))
    got = resize_bilinear(torch.from_numpy(x).unsqueeze(1), 32)[:, 0].numpy()
    np.testing.assert_allclose(got, numpy_bilinear(x, 32), atol=1e-12)


@pytest.mark.parametrize("size_in", [28, 45, 64])
def test_resize_bilinear_matches_pillow_up_and_down(size_in: int) -> None:
    u8 = RNG.integers(0, 256, (20, size_in, size_in), dtype=np.uint8)
    got = resize_bilinear(torch.from_numpy(u8).float().div(255).unsqueeze(1), 32)[:, 0]
    np.testing.assert_allclose(got.numpy(), pillow_resize(u8, 32), atol=PILLOW_ATOL, rtol=0)


def test_resize_bilinear_rejects_integer_images() -> None:
    with pytest.raises(BlendaeError, match="expects float N×C×H×W"):
        resize_bilinear(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 32)


def test_mnist_to_rgb32() -> None:
    u8 = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    rgb = mnist_to_rgb32(u8)
    assert rgb.shape == (5, 3, 32, 32) and rgb.dtype == torch.float32
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert torch.equal(mnist_to_rgb32(torch.from_numpy(u8)), rgb)
    with pytest.raises(BlendaeError, match="expects uint8 N×H×W"):
        mnist_to_rgb32(u8.astype(np.float32))


@pytest.mark.parametrize("preset", ["seed", "unit"])
def test_blend_matches_a_direct_numpy_computation(preset: str) -> None:
    cifar = RNG.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    mnist = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    got = blend(cifar, mnist, preset)
    assert got.dtype == torch.float32 and got.shape == (7, 3, 32, 32)
    np.testing.assert_allclose(
        got.numpy(), numpy_blend(cifar, mnist, get_preset(preset)), atol=1e-5
    )


def test_blend_rejects_mismatched_inputs() -> None:
    cifar = np.zeros((3, 3, 32, 32), np.uint8)
    with pytest.raises(BlendaeError, match="got 3 CIFAR images and 2 MNIST digits"):
        blend(cifar, np.zeros((2, 28, 28), np.uint8), "seed")
    with pytest.raises(BlendaeError, match=r"expects CIFAR uint8 N×3×32×32"):
        blend(np.zeros((3, 32, 32, 3), np.uint8), np.zeros((3, 28, 28), np.uint8), "seed")


# ---------------------------------------------------------------- the pixel map


def _all(value: int, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, 3, 32, 32), value, np.uint8), np.full((n, 28, 28), value, np.uint8)


@pytest.mark.parametrize("preset", ["seed", "unit"])
def test_to_pixels_sends_black_to_0_and_white_to_255(preset: str) -> None:
    assert torch.allclose(to_pixels(blend(*_all(0), preset), preset), torch.tensor(0.0), atol=1e-4)
    assert torch.allclose(
        to_pixels(blend(*_all(255), preset), preset), torch.tensor(255.0), atol=1e-4
    )


@pytest.mark.parametrize("preset", ["seed", "unit"])
def test_from_pixels_inverts_to_pixels(preset: str) -> None:
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(from_pixels(to_pixels(x, preset), preset), x)
    single = torch.rand(3, 5, 5) * 255  # one image without a batch axis
    torch.testing.assert_close(
        to_pixels(from_pixels(single, preset), preset), single, atol=1e-4, rtol=0
    )
    assert to_pixels(x.float(), preset).dtype == torch.float32


def test_unit_preset_pixels_are_the_pixel_mean_image() -> None:
    cifar = RNG.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    mnist = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    mean_image = (torch.from_numpy(cifar).double() + mnist_to_rgb32(mnist).double() * 255) / 2
    pixels = to_pixels(blend(cifar, mnist, "unit"), "unit")
    torch.testing.assert_close(pixels.double(), mean_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(pixel_scale("unit"), torch.full((3,), 255.0))


def test_equal_stds_give_exactly_the_pixel_mean_image() -> None:
    p = Preset("equal", (0.4, 0.5, 0.6), (0.3, 0.2, 0.25), (0.1, 0.2, 0.3), (0.3, 0.2, 0.25))
    cifar = RNG.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    mnist = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    mean_image = (torch.from_numpy(cifar).double() + mnist_to_rgb32(mnist).double() * 255) / 2
    torch.testing.assert_close(
        to_pixels(blend(cifar, mnist, p), p).double(), mean_image, atol=1e-3, rtol=0
    )


def test_pixel_scale_is_the_slope_of_to_pixels() -> None:
    x = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    slope = (to_pixels(x + 1, "seed") - to_pixels(x, "seed")).flatten()
    torch.testing.assert_close(pixel_scale("seed").double(), slope)
    # seed, red: lo = (-0.485/0.229 - 1) / 2, hi = (0.515/0.229 + 1) / 2
    assert pixel_scale("seed")[0].item() == pytest.approx(255 / ((1 / 0.229 + 2) / 2))


# ---------------------------------------------------------------- load_blended on fixtures


def _prepared(cache: Path) -> list[Path]:
    return sorted((cache / "prepared").glob("*.safetensors"))


def test_load_blended_on_fixtures(
    tiny_mirror: Path, tiny_datasets: TinyDatasets, tmp_path: Path, fixture_counts: Counts
) -> None:
    splits = load_blended(
        "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    cifar_train, cifar_test = tiny_datasets.cifar["train"][0], tiny_datasets.cifar["test"][0]
    mnist_train, mnist_test = tiny_datasets.mnist["train"][0], tiny_datasets.mnist["test"][0]
    assert splits.preset == "seed"
    assert splits.train.shape == (20, 3, 32, 32) and splits.test.shape == (4, 3, 32, 32)
    seed = get_preset("seed")
    np.testing.assert_allclose(
        splits.train.numpy(), numpy_blend(cifar_train, mnist_train[:20], seed), atol=1e-5
    )
    np.testing.assert_allclose(
        splits.test.numpy(), numpy_blend(cifar_test, mnist_test, seed), atol=1e-5
    )

    (path,) = _prepared(tmp_path)
    key = splits.manifest["key"]
    assert path.name == f"blend-seed-{key}.safetensors" and len(key) == 16
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk == splits.manifest
    sums = dict(
        reversed(line.split()) for line in (tiny_mirror / "SHA256SUMS").read_text().splitlines()
    )
    assert splits.manifest["sources_sha256"] == {
        n: sums[n] for n in splits.manifest["sources_sha256"]
    }
    assert set(splits.manifest["sources_sha256"]) == {*sums} - {"cifar-10-python.tar.gz"}
    assert splits.manifest["preset"]["mnist_std"] == [0.229, 0.224, 0.225]
    assert splits.manifest["cifar_variant"] == "binary"
    assert splits.manifest["shapes"] == {"train": [20, 3, 32, 32], "test": [4, 3, 32, 32]}
    assert splits.manifest["dtype"] == "float32" and splits.manifest["format_version"] == 1


def test_load_blended_reuses_the_cache(
    tiny_mirror: Path, tmp_path: Path, fixture_counts: Counts, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_blended(
        "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    (path,) = _prepared(tmp_path)
    before = path.stat()
    monkeypatch.setattr("blendae.data.blend._build", lambda *a: pytest.fail("rebuilt"))
    again = load_blended(
        "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert torch.equal(first.train, again.train) and torch.equal(first.test, again.test)
    assert again.manifest == first.manifest


def test_load_blended_rebuilds_for_another_preset_or_variant(
    tiny_mirror: Path, tmp_path: Path, fixture_counts: Counts
) -> None:
    seed = load_blended(
        "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    unit = load_blended(
        "unit", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    python = load_blended(
        "seed",
        mirror=str(tiny_mirror),
        cache=tmp_path,
        cifar_variant="python",
        progress=False,
        counts=fixture_counts,
    )
    keys = {seed.manifest["key"], unit.manifest["key"], python.manifest["key"]}
    assert len(keys) == 3 and len(_prepared(tmp_path)) == 3
    assert not torch.equal(seed.train, unit.train)
    assert torch.equal(seed.train, python.train)  # the same pixels, read from the other archive
    assert unit.train.min() >= 0 and unit.train.max() <= 1


def test_load_blended_rebuilds_when_an_input_changes(
    tmp_path: Path, fixture_counts: Counts
) -> None:
    mirror = write_tiny_mirror(tmp_path / "mirror", make_tiny_datasets(seed=0))
    old = load_blended(
        "unit", mirror=str(mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    write_tiny_mirror(mirror, make_tiny_datasets(seed=1))  # new pixels, new SHA256SUMS
    (tmp_path / "raw" / CIFAR_BINARY).unlink()  # the cached copy goes, so it is fetched anew
    new = load_blended(
        "unit", mirror=str(mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    assert new.manifest["key"] != old.manifest["key"]
    assert (
        new.manifest["sources_sha256"][CIFAR_BINARY] != old.manifest["sources_sha256"][CIFAR_BINARY]
    )
    assert not torch.equal(new.train, old.train)


@pytest.mark.parametrize(
    "damage", ["garbage", "truncated", "wrong shapes", "no manifest", "nan", "inf"]
)
def test_load_blended_rebuilds_a_corrupt_cache(
    tiny_mirror: Path,
    tmp_path: Path,
    fixture_counts: Counts,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    good = load_blended(
        "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    (path,) = _prepared(tmp_path)
    if damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "wrong shapes":
        save_file(
            {"train": good.train[:3], "test": good.test},
            str(path),
            metadata={"key": good.manifest["key"]},
        )
    elif damage in ("nan", "inf"):  # a valid file, finite but for one value
        poisoned = good.train.clone()
        poisoned[len(poisoned) - 1, 2, 31, 31] = float(damage)
        save_file(
            {"train": poisoned, "test": good.test},
            str(path),
            metadata={"key": good.manifest["key"]},
        )
    else:
        path.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING, logger="blendae"):
        again = load_blended(
            "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
        )
    assert "is unusable" in caplog.text and "rebuilding it" in caplog.text
    if damage in ("nan", "inf"):
        assert "tensor 'train' holds NaN or infinite values" in caplog.text
    assert torch.equal(again.train, good.train) and torch.equal(again.test, good.test)
    caplog.clear()
    load_blended(
        "seed", mirror=str(tiny_mirror), cache=tmp_path, progress=False, counts=fixture_counts
    )
    assert caplog.text == ""  # repaired for good


def test_all_finite() -> None:
    x = torch.rand(10, 3, 4, 4) * 6 - 3
    assert _all_finite(x)
    for bad in (float("nan"), float("inf"), float("-inf"), 3e38):  # 3e38: no blend value
        y = x.clone()
        y[9, 2, 3, 3] = bad
        y[0, 0, 0, 0] = abs(bad)  # +inf and -inf sum to NaN, still caught
        assert not _all_finite(y), bad


def test_load_blended_rejects_bad_arguments_before_fetching(tmp_path: Path) -> None:
    with pytest.raises(BlendaeError, match="unknown preset 'seeds'"):
        load_blended("seeds", mirror=str(tmp_path), cache=tmp_path)
    with pytest.raises(BlendaeError, match="unknown CIFAR-10 variant 'png'"):
        load_blended("seed", mirror=str(tmp_path), cache=tmp_path, cifar_variant="png")
    assert not (tmp_path / "raw").exists()


def test_load_blended_with_a_mirror_missing_the_python_archive(
    tiny_mirror: Path, tmp_path: Path, fixture_counts: Counts
) -> None:
    served = sorted(p.name for p in tiny_mirror.iterdir() if p.name != "SHA256SUMS")
    write_sha256sums(tiny_mirror, [name for name in served if "python" not in name])
    with pytest.raises(BlendaeError, match=r"has no entry for cifar-10-python\.tar\.gz"):
        load_blended(
            "seed",
            mirror=str(tiny_mirror),
            cache=tmp_path,
            cifar_variant="python",
            counts=fixture_counts,
        )


# ---------------------------------------------------------------- the real mirror


@pytest.mark.mirror
def test_resize_matches_pillow_on_real_digits(real_cache: Path) -> None:
    files = fetch("mnist", mirror=os.environ["BLENDAE_MIRROR"], cache=real_cache, progress=False)
    digits = read_mnist(files, "test")[0][:3000]
    ours = mnist_to_rgb32(digits).double().numpy()
    pillow = pillow_resize(digits, 32)
    for channel in range(3):
        np.testing.assert_allclose(ours[:, channel], pillow, atol=PILLOW_ATOL, rtol=0)
    assert np.abs(ours[:, 0] - pillow).mean() < 0.1 / 255  # the same filter, not just close


@pytest.fixture(scope="session")
def real_seed_splits(real_cache: Path) -> BlendedSplits:
    """The full seed blend, built once per session (about 20 s and 700 MB)."""
    return load_blended("seed", cache=real_cache, progress=False)


@pytest.mark.mirror
def test_real_seed_blend(real_seed_splits: BlendedSplits, real_cache: Path) -> None:
    splits = real_seed_splits
    assert splits.train.shape == (50_000, 3, 32, 32) and splits.test.shape == (10_000, 3, 32, 32)
    assert splits.train.dtype == torch.float32
    assert 0.9 < splits.train.pow(2).mean().item() < 1.1  # the study's first loss was 0.97
    start = time.perf_counter()
    warm = load_blended("seed", cache=real_cache, progress=False)
    assert time.perf_counter() - start < 5  # a warm load is a file map, not a rebuild
    assert warm.manifest == splits.manifest
    assert torch.equal(warm.test, splits.test)
