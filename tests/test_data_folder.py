"""`folder:PATH`: the walk, the hash split, the uint8 cache and its crops, on tiny folders."""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blendae.data.folder import FolderImages, load_folder, split_of
from blendae.errors import BlendaeError

SPLITS = ("train", "val", "test")


def rgb(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces `width`×`height` pixels (its data is garbage): a bomb that
    Pillow refuses at open, before decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"x") + chunk(b"IEND", b"")


def load(root: Path, cache: Path, **kwargs: object) -> FolderImages:
    return load_folder(root, cache=cache, progress=False, **kwargs)  # type: ignore[arg-type]


def total(images: FolderImages) -> int:
    return sum(len(images.split(s)) for s in SPLITS)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """30 RGB images of 40×48 in two levels."""
    root = tmp_path / "images"
    for i in range(30):
        save(root / ("sub" if i % 2 else "") / f"img{i:02d}.png", rgb(i))
    return root


# ---------------------------------------------------------------- the split


def test_split_is_a_hash_of_the_path_and_stable_when_files_are_added(
    folder: Path, tmp_path: Path
) -> None:
    images = load(folder, tmp_path / "cache", split=(50, 25, 25))
    before = {s: images.paths(s) for s in SPLITS}
    assert sum(map(len, before.values())) == 30
    assert all(len(images.split(s)) == len(before[s]) for s in SPLITS)
    assert all(split_of(rel, (50, 25, 25)) == i for i, s in enumerate(SPLITS) for rel in before[s])
    for i in range(30, 60):
        save(folder / f"new{i}.png", rgb(i))
    after = {s: set(load(folder, tmp_path / "cache", split=(50, 25, 25)).paths(s)) for s in SPLITS}
    assert all(set(before[s]) <= after[s] for s in SPLITS)  # no old file moved
    assert sum(map(len, after.values())) == 60
    with pytest.raises(BlendaeError, match="unknown split 'training'; valid splits: train"):
        images.split("training")


def test_split_of_uses_the_posix_relative_path_and_the_percentages() -> None:
    names = [f"a/b{i}.png" for i in range(2000)]
    codes = np.array([split_of(n, (90, 5, 5)) for n in names])
    assert 0.85 < np.mean(codes == 0) < 0.95 and (codes == 1).any() and (codes == 2).any()
    assert all(split_of(n, (100, 0, 0)) == 0 for n in names)
    assert codes.tolist() == [split_of(n, (90, 5, 5)) for n in names]


@pytest.mark.parametrize(
    "split", [(90, 10), (90, 5, 6), (0, 50, 50), (95, -5, 10), (90.0, 5, 5), (True, 0, 99)]
)
def test_a_bad_split_is_one_clear_error(folder: Path, tmp_path: Path, split: tuple) -> None:
    with pytest.raises(BlendaeError, match="invalid split"):
        load(folder, tmp_path / "cache", split=split)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("size", [0, 24, 33, -16, 32.0])
def test_a_size_not_a_multiple_of_16_is_refused(folder: Path, tmp_path: Path, size: int) -> None:
    with pytest.raises(BlendaeError, match="multiple of 16"):
        load(folder, tmp_path / "cache", size=size)


def test_a_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BlendaeError, match="no such folder"):
        load(tmp_path / "nope", tmp_path / "cache")


# ---------------------------------------------------------------- the cache


def test_a_second_load_reuses_the_cache_and_a_change_rebuilds_it(
    folder: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = load(folder, cache, split=(100, 0, 0))
    assert load(folder, cache, split=(100, 0, 0)).manifest["pixels"] == first.manifest["pixels"]
    paths = first.paths("train")
    changed = folder / paths[0]
    save(changed, np.zeros((40, 48, 3), np.uint8))
    os.utime(changed, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    second = load(folder, cache, split=(100, 0, 0))
    assert second.manifest["pixels"] != first.manifest["pixels"]
    assert not second.split("train").crops(np.array([0]), 32).any()  # the new content
    (folder / paths[1]).unlink()
    assert total(load(folder, cache, split=(100, 0, 0))) == 29
    leftovers = sorted(p.name for p in next((cache / "folders").iterdir()).iterdir())
    assert len(leftovers) == 4 and ".lock" in leftovers and "manifest.json" in leftovers


def test_an_interrupted_build_is_never_taken_as_valid(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    load(folder, cache)
    save(folder / "added.png", rgb(99))
    import blendae.data.folder as folder_module

    calls = []

    def killed(*args: object) -> np.ndarray:
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt  # as a kill mid-build: no manifest gets written
        return real(*args)

    real = folder_module._decode
    monkeypatch.setattr(folder_module, "_decode", killed)
    with pytest.raises(KeyboardInterrupt):
        load(folder, cache)
    monkeypatch.undo()
    entry = next((cache / "folders").iterdir())
    assert not (entry / "manifest.json").exists()
    assert total(load(folder, cache)) == 31


def test_a_truncated_pixel_file_is_rebuilt(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    images = load(folder, cache)
    pixels = next((cache / "folders").iterdir()) / images.manifest["pixels"]
    with pixels.open("r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING, logger="blendae"):
        again = load(folder, cache)
    assert "unusable" in caplog.text and total(again) == 30


def test_parallel_loads_build_once(folder: Path, tmp_path: Path) -> None:
    results: list[FolderImages] = []
    threads = [
        threading.Thread(target=lambda: results.append(load(folder, tmp_path / "cache")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.manifest["pixels"] for r in results}) == 1


def test_nothing_is_written_outside_the_cache(folder: Path, tmp_path: Path) -> None:
    before = sorted(folder.rglob("*"))
    load(folder, folder / ".cache")  # even a cache inside the folder is not walked
    assert sorted(p for p in folder.rglob("*") if ".cache" not in p.parts) == before
    assert total(load(folder, folder / ".cache")) == 30


# ---------------------------------------------------------------- skipped files


def test_every_unusable_file_is_skipped_counted_and_logged_once(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / "corrupt.png").write_bytes(b"not an image at all")
    good = save(tmp_path / "elsewhere" / "x.png", rgb(7)).read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    save(folder / "small.png", rgb(3, 20, 64))
    (folder / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    (folder / "notes.txt").write_text("hello")
    (folder / "out.png").symlink_to(tmp_path / "elsewhere" / "x.png")
    (folder / "outdir").symlink_to(tmp_path / "elsewhere")
    (folder / "inside.png").symlink_to(folder / "img00.png")
    (folder / "loop").symlink_to(folder)
    with caplog.at_level(logging.WARNING, logger="blendae"):
        images = load(folder, tmp_path / "cache")
    assert total(images) == 31  # the 30 and the link inside
    counts = images.manifest["counts"]
    assert counts["skipped"] == {"unreadable": 2, "too_small": 1, "too_large": 1, "outside": 2}
    assert counts["not_images"] == 1
    reasons = {rel: reason for rel, reason, _ in images.manifest["skipped"]}
    assert reasons == {
        "corrupt.png": "unreadable",
        "truncated.png": "unreadable",
        "small.png": "too_small",
        "bomb.png": "too_large",
        "out.png": "outside",
        "outdir": "outside",
    }
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 6 and all("\n" not in line for line in lines)
    assert all(r.exc_info is None for r in caplog.records)
    for name in reasons:
        assert sum(name in line for line in lines) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="blendae"):
        load(folder, tmp_path / "cache")  # from the cache: said once, at the build
    assert not caplog.records


def test_a_folder_without_usable_images_names_it_and_the_counts(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(b"junk")
    save(root / "b.png", rgb(1, 8, 8))
    with pytest.raises(BlendaeError, match=r"bad: 0 train.*1 smaller.*1 corrupt") as info:
        load(root, tmp_path / "cache")
    assert "\n" not in str(info.value)
    leftovers = [p.name for p in next((tmp_path / "cache" / "folders").iterdir()).iterdir()]
    assert leftovers == [".lock"]


# ---------------------------------------------------------------- channels and pixels


def test_gray_images_give_one_channel(tmp_path: Path) -> None:
    root = tmp_path / "gray"
    for i in range(6):
        save(root / f"{i}.png", rgb(i)[..., 0])
    Image.fromarray(257 * rgb(9)[..., 0].astype(np.uint16)).save(root / "deep.png")  # 16-bit
    images = load(root, tmp_path / "cache", split=(100, 0, 0))
    assert images.channels == 1 and images.manifest["channels"] == 1
    crops = images.split("train").crops(np.arange(7), 32)
    assert crops.shape == (7, 1, 32, 32)
    deep = images.paths("train").index("deep.png")
    assert np.array_equal(crops[deep, 0], rgb(9)[4:36, 8:40, 0])
    assert len(images.split("train").mean_std[0]) == 1


def test_mixed_images_give_three_channels_gray_repeated(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    save(root / "gray.png", rgb(1)[..., 0])
    rgba = np.dstack([rgb(2), np.full((40, 48), 128, np.uint8)])
    save(root / "alpha.png", rgba)
    images = load(root, tmp_path / "cache", split=(100, 0, 0))
    assert images.channels == 3 and images.manifest["counts"]["alpha_dropped"] == 1
    order = images.paths("train")
    crops = images.split("train").crops(np.arange(2), 32)
    gray, color = crops[order.index("gray.png")], crops[order.index("alpha.png")]
    assert all(np.array_equal(gray[c], rgb(1)[4:36, 8:40, 0]) for c in range(3))
    assert np.array_equal(color, rgb(2)[4:36, 8:40].transpose(2, 0, 1))
    mean, std = images.split("train").mean_std
    both = np.concatenate([np.repeat(rgb(1)[..., :1], 3, 2), rgb(2)]) / 255
    assert np.allclose(mean, both.reshape(-1, 3).mean(0), atol=1e-6)
    assert np.allclose(std, both.reshape(-1, 3).std(0), atol=1e-6)


def test_large_images_are_stored_shrunk_to_the_short_side_cap(tmp_path: Path) -> None:
    root = tmp_path / "large"
    save(root / "wide.png", rgb(1, 100, 300))
    Image.fromarray(rgb(2, 160, 120)).save(root / "tall.jpg", quality=90)
    images = load(root, tmp_path / "cache", size=16, split=(100, 0, 0))  # cap 64
    sizes = dict(zip(images.paths("train"), images.split("train").sizes().tolist(), strict=True))
    assert sizes == {"wide.png": [64, 192], "tall.jpg": [85, 64]}
    kept = load(root, tmp_path / "cache", size=16, split=(100, 0, 0), max_short_side=1000)
    assert sorted(kept.split("train").sizes().tolist()) == [[100, 300], [160, 120]]
    with pytest.raises(BlendaeError, match="max_short_side"):
        load(root, tmp_path / "cache", size=32, max_short_side=16)


# ---------------------------------------------------------------- crops


def test_crops_are_windows_of_the_images_reproducible_with_a_seed(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    shapes = [(32 + i, 48 + 3 * i) for i in range(10)]
    for i, (h, w) in enumerate(shapes):
        save(root / f"{i}.png", rgb(i, h, w))
    store = load(root, tmp_path / "cache", split=(100, 0, 0)).split("train")
    idx = np.array([3, 3, 0, 9, 5, 1, 7, 2, 8, 6, 4])
    a = store.crops(idx, 32, np.random.default_rng(5))
    b = store.crops(idx, 32, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == (11, 3, 32, 32) and np.array_equal(a, b)
    assert not np.array_equal(a, store.crops(idx, 32, np.random.default_rng(6)))
    paths = load(root, tmp_path / "cache", split=(100, 0, 0)).paths("train")
    order = [int(p.split(".")[0]) for p in paths]
    for crop, i in zip(a, idx, strict=True):
        image = rgb(order[i], *shapes[order[i]]).transpose(2, 0, 1)
        windows = np.lib.stride_tricks.sliding_window_view(image, (3, 32, 32))[0]
        assert (windows == crop).all(axis=(-3, -2, -1)).any()
    center, center_32 = store.crops(idx, 16, None), store.crops(idx, 32, None)
    for crop, i in zip(center, idx, strict=True):
        (h, w), image = shapes[order[i]], rgb(order[i], *shapes[order[i]])
        y, x = (h - 16) // 2, (w - 16) // 2
        assert np.array_equal(crop, image[y : y + 16, x : x + 16].transpose(2, 0, 1))
    with pytest.raises(BlendaeError, match="cannot cut 64×64"):
        store.crops(idx, 64, None)
    assert store.crops(np.array([], dtype=np.int64), 32, None).shape == (0, 3, 32, 32)
    copy = pickle.loads(pickle.dumps(store))  # as worker processes get it: by path
    assert len(pickle.dumps(store)) < 2_000 and np.array_equal(copy.crops(idx, 32), center_32)
