"""compress/decompress on files: nothing the user has is destroyed, every expected failure is
one line and exit 2, inputs are decoded as the user meant, memory stays bounded."""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blendae import files as fs
from blendae import imagefiles
from blendae.codec import container, images
from blendae.codec.images import check_size
from blendae.errors import BlendaeError
from blendae.imagefiles import read_image
from blendae.models.tiling import tiles
from conftest import blendae, snapshot


@pytest.fixture(scope="module")
def run(codec_run: str) -> str:
    return codec_run


def random_image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def save(path: Path, h: int = 12, w: int = 10, seed: int = 0, **kw: object) -> Path:
    Image.fromarray(random_image(h, w, seed=seed)).save(path, **kw)
    return path


def png_bytes(w: int, h: int, bit_depth: int, color_type: int, raw: bytes | None) -> bytes:
    """A PNG written by hand: 16-bit RGB (Pillow cannot write it) or a forged header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(raw if raw is not None else b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ------------------------------------------------------------ files are never destroyed


def test_an_output_that_is_an_input_is_refused_even_with_force(run: str, tmp_path: Path) -> None:
    photo = save(tmp_path / "p.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.bae").symlink_to(photo)
    os.link(photo, tmp_path / "hard.bae")
    before = snapshot(tmp_path)
    for out in (photo, tmp_path / "sub" / ".." / "p.png", tmp_path / "link.bae"):
        for force in ([], ["--force"]):
            rc, stdout, err = blendae("compress", photo, "-o", out, "--model", run, *force)
            assert (rc, stdout, len(err)) == (2, [], 1), err
            assert "is the input" in err[0] and "p.png" in err[0]
    rc, _, err = blendae("compress", photo, "-o", tmp_path / "hard.bae", "--model", run, "-f")
    assert rc == 2 and "is the input" in err[0]
    assert snapshot(tmp_path) == before


def test_existing_outputs_are_replaced_only_with_force(run: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    save(src / "a.png", seed=1)
    save(src / "b.png", seed=2)
    rc, stdout, err = blendae("compress", src, "-o", tmp_path / "bae", "--model", run)
    assert rc == 0 and stdout == [str(tmp_path / "bae" / n) for n in ("a.bae", "b.bae")]
    assert len(err) == 1 and err[0].startswith("blendae: 2 files, ") and "bpp" in err[0]
    save(src / "c.png", seed=3)
    (tmp_path / "bae" / "b.bae").write_bytes(b"mine")
    before = snapshot(tmp_path)
    rc, stdout, err = blendae("compress", src, "-o", tmp_path / "bae", "--model", run)
    assert (rc, stdout, len(err)) == (2, [], 1)
    assert "a.bae already exists; use --force" in err[0]
    assert snapshot(tmp_path) == before  # nothing written: no c.bae either
    rc, stdout, _ = blendae("compress", src, "-o", tmp_path / "bae", "--model", run, "--force")
    assert rc == 0 and len(stdout) == 3
    assert (tmp_path / "bae" / "b.bae").read_bytes() != b"mine"

    rc, _, _ = blendae("decompress", tmp_path / "bae", "-o", tmp_path / "png", "--model", run)
    assert rc == 0
    before = snapshot(tmp_path)
    rc, _, err = blendae("decompress", tmp_path / "bae", "-o", tmp_path / "png", "--model", run)
    assert rc == 2 and len(err) == 1 and "a.png already exists" in err[0]
    rc, _, err = blendae(
        "decompress", tmp_path / "bae" / "a.bae", "-o", src / "b.png", "--model", run
    )
    assert rc == 2 and len(err) == 1 and "b.png already exists" in err[0]
    assert snapshot(tmp_path) == before
    rc, _, _ = blendae(
        "decompress", tmp_path / "bae" / "a.bae", "-o", src / "b.png", "--model", run, "-f"
    )
    assert rc == 0 and Image.open(src / "b.png").size == (10, 12)


def test_a_file_name_with_several_inputs_is_an_error(run: str, tmp_path: Path) -> None:
    a, b = save(tmp_path / "a.png"), save(tmp_path / "b.png", seed=1)
    before = snapshot(tmp_path)
    rc, _, err = blendae("compress", a, b, "-o", tmp_path / "single.bae", "--model", run)
    assert rc == 2 and len(err) == 1 and "single.bae names a file but there are 2 inputs" in err[0]
    rc, _, err = blendae("decompress", a, b, "-o", tmp_path / "single.png", "--model", run)
    assert rc == 2 and len(err) == 1
    assert snapshot(tmp_path) == before


def test_a_failed_command_creates_nothing(run: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    save(src / "a.png")
    (src / "z.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    before = snapshot(tmp_path)
    rc, _, err = blendae("compress", src, "-o", tmp_path / "out" / "deep", "--model", run)
    assert rc == 2 and len(err) == 1 and "z.png" in err[0]
    assert snapshot(tmp_path) == before  # no out/ folder


def test_a_failure_while_writing_removes_what_was_written(
    run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        save(src / f"{i}.png", seed=i)
    before = snapshot(tmp_path)
    real = fs.atomic_write
    calls = []

    def failing(path: Path, write: object, **kw: object) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise BlendaeError(f"cannot write {path}: No space left on device")
        real(path, write, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(imagefiles, "atomic_write", failing)  # the disk fills up
    rc, _, err = blendae("compress", src, "-o", tmp_path / "out", "--model", run)
    assert rc == 2 and len(err) == 1 and "No space left" in err[0]
    assert snapshot(tmp_path) == before


def test_folders_top_level_by_default_recursive_mirrors(run: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    save(src / "a.png")
    save(src / "sub" / "b.jpg", format="JPEG")
    save(src / "sub" / "deeper" / "c.PNG")
    (src / "notes.txt").write_text("hi")
    (src / "sub" / "data.csv").write_text("1")
    rc, stdout, err = blendae("compress", src, "-o", tmp_path / "top", "--model", run)
    assert rc == 0 and stdout == [str(tmp_path / "top" / "a.bae")]
    assert err[0] == "blendae: skipped 1 file that are not images (.png, .jpg, .jpeg, ...)"
    assert err[1] == "blendae: skipped 1 subfolder; --recursive codes them too"
    assert err[2].startswith("blendae: 1 file, ")
    rc, stdout, err = blendae("compress", src, "-o", tmp_path / "all", "--model", run, "-r")
    assert rc == 0 and len(err) == 2 and "skipped 2 files" in err[0]
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in map(Path, stdout)) == [
        "a.bae",
        "sub/b.bae",
        "sub/deeper/c.bae",
    ]
    rc, stdout, _ = blendae(
        "decompress", tmp_path / "all", "-o", tmp_path / "back", "-r", "--model", run
    )
    assert rc == 0 and (tmp_path / "back" / "sub" / "deeper" / "c.png").is_file()
    (src / "sub" / "x").mkdir()
    rc, _, err = blendae("compress", src / "sub" / "x", "-o", tmp_path / "none", "--model", run)
    assert rc == 2 and len(err) == 1 and "has no images" in err[0]


def test_decompress_skips_folders_and_broken_links_named_bae(run: str, tmp_path: Path) -> None:
    bae = tmp_path / "bae"
    rc, _, _ = blendae("compress", save(tmp_path / "a.png"), "-o", bae / "a.bae", "--model", run)
    assert rc == 0
    (bae / "sub.bae").mkdir()
    (bae / "gone.bae").symlink_to(tmp_path / "nowhere.bae")
    rc, stdout, err = blendae("decompress", bae, "-o", tmp_path / "png", "--model", run)
    assert rc == 0 and stdout == [str(tmp_path / "png" / "a.png")]
    assert "skipped 2 entries named like .bae files that are not regular files" in err[0]
    rc, _, err = blendae("decompress", bae / "gone.bae", "-o", tmp_path / "x.png", "--model", run)
    assert rc == 2 and len(err) == 1 and "is not a regular file" in err[0]


# ------------------------------------------------- every expected failure is one line, exit 2


def bad_files(folder: Path) -> dict[str, Path]:
    good = save(folder / "good.png", h=40, w=40)
    data = good.read_bytes()
    jpeg = save(folder / "good.jpg", h=40, w=40, format="JPEG").read_bytes()
    files = {
        "bomb": png_bytes(20000, 20000, 8, 0, None),  # Pillow's DecompressionBombError
        "bomb-warning": png_bytes(10000, 10000, 8, 0, None),  # DecompressionBombWarning
        "too-large": png_bytes(3000, 2000, 8, 0, None),  # over MAX_PIXELS
        "truncated.png": data[: len(data) // 2],
        "bad-idat.png": png_bytes(4, 4, 8, 0, b"\x07" * 3),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "garbage.jpg": jpeg[:20] + b"\xff" * 200,
        "truncated.ppm": b"P6\n40 40\n255\n" + b"\x01" * 100,
        "bad.ppm": b"P6\n-4 x\n255\n",
        "empty.png": b"",
    }
    out = {}
    for name, raw in files.items():
        path = folder / (name if "." in name else f"{name}.png")
        path.write_bytes(raw)
        out[name] = path
    return out


def test_bad_images_are_one_line_and_exit_2(run: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    bad = bad_files(tmp_path / "in")
    before = snapshot(tmp_path)
    for name, path in bad.items():
        rc, stdout, err = blendae("compress", path, "-o", tmp_path / "o.bae", "--model", run)
        assert (rc, stdout, len(err)) == (2, [], 1), (name, err)
        assert err[0].startswith("blendae: error: ") and path.name in err[0], err
        if name.startswith(("bomb", "too")):
            assert "pixels" in err[0], err
    assert snapshot(tmp_path) == before
    rc, _, err = blendae("compress", bad["too-large"], "-o", tmp_path / "o.bae", "--model", run)
    assert "image size 3000x2000 (width x height) is not supported" in err[0]


def test_forged_bae_headers_fail_fast_or_decode_bounded(
    run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blendae.codec import load_codec

    ident = load_codec(run).model_id
    big = container.Header(ident, 2048, 2048, 3)
    (tmp_path / "short.bae").write_bytes(container.pack(big, [b"\0\0\0\0"]))
    head = container.pack(container.Header(ident, 2049, 2048, 3), [b""])
    (tmp_path / "huge.bae").write_bytes(head)
    synthesis = load_codec(run).model.g_s
    monkeypatch.setattr(synthesis, "forward", lambda *a: pytest.fail("network decoded"))
    rc, _, err = blendae(
        "decompress", tmp_path / "short.bae", "-o", tmp_path / "a.png", "--model", run
    )
    assert rc == 2 and len(err) == 1 and "short.bae: corrupt .bae payload" in err[0]
    rc, _, err = blendae(
        "decompress", tmp_path / "huge.bae", "-o", tmp_path / "a.png", "--model", run
    )
    assert rc == 2 and len(err) == 1 and "image size 2048x2049" in err[0] and "pixels" in err[0]
    assert not (tmp_path / "a.png").exists()


def test_atomic_write_errors_are_blendae_errors_and_cleanup_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(tmp: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))

    def no_unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", no_unlink)
    with pytest.raises(BlendaeError, match=r"cannot write .*x\.bin: Read-only file system"):
        fs.atomic_write(tmp_path / "x.bin", read_only)
    monkeypatch.undo()

    def half(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BlendaeError, match="No space left"):
        fs.atomic_write(tmp_path / "y.bin", half)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "z.bin").write_bytes(b"old")
    with pytest.raises(BlendaeError, match="already exists"):
        fs.atomic_write(tmp_path / "z.bin", lambda t: t.write_bytes(b"new"), replace=False)
    assert [p.name for p in tmp_path.iterdir()] == ["z.bin"]
    assert (tmp_path / "z.bin").read_bytes() == b"old"


def test_a_read_only_output_is_one_line(
    run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def erofs(*args: object, **kw: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "link", erofs)
    monkeypatch.setattr(os, "replace", erofs)
    rc, _, err = blendae(
        "compress", save(tmp_path / "a.png"), "-o", tmp_path / "a.bae", "--model", run
    )
    assert rc == 2 and len(err) == 1 and "Read-only file system" in err[0]
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


# ------------------------------------------------------ inputs decoded as the user meant


def test_sixteen_bit_images_are_scaled_to_eight_bits(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 16).round().astype(np.uint16).reshape(16, 64)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")  # mode I;16
    Image.fromarray(ramp.astype(np.int32), mode="I").save(tmp_path / "gray32.tiff")
    expected = np.round(ramp / 257).astype(np.uint8)
    for name in ("gray16.png", "gray32.tiff"):
        got = read_image(tmp_path / name, [], check_size)
        assert got.dtype == np.uint8 and np.abs(got.astype(int) - expected).max() <= 1, name
    rgb16 = np.random.default_rng(0).integers(0, 65536, (5, 7, 3)).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rgb16)
    (tmp_path / "rgb16.png").write_bytes(png_bytes(7, 5, 16, 2, raw))
    got = read_image(tmp_path / "rgb16.png", [], check_size)
    assert np.abs(got.astype(int) - rgb16 / 257).max() <= 1


def test_alpha_is_dropped_with_a_note_and_palettes_expand(run: str, tmp_path: Path) -> None:
    rgba = random_image(8, 9, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    notes: list[str] = []
    assert np.array_equal(read_image(tmp_path / "rgba.png", notes, check_size), rgba[..., :3])
    assert notes == [
        f"{tmp_path / 'rgba.png'}: dropped the alpha channel (transparency); "
        "blendae codes gray or RGB"
    ]
    Image.fromarray(rgba[..., :2], "LA").save(tmp_path / "la.png")
    notes.clear()
    assert np.array_equal(read_image(tmp_path / "la.png", notes, check_size), rgba[..., 0])
    assert len(notes) == 1
    pal = Image.fromarray(random_image(8, 9)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "pal.gif")
    notes.clear()
    got = read_image(tmp_path / "pal.gif", notes, check_size)
    assert np.array_equal(got, np.asarray(pal.convert("RGB"))) and notes == []
    rc, _, err = blendae(
        "compress", tmp_path / "rgba.png", "-o", tmp_path / "o.bae", "--model", run
    )
    assert rc == 0 and len(err) == 2 and "rgba.png: dropped the alpha channel" in err[0]


# ------------------------------------------------------------ modes and bounded memory


def test_written_files_get_the_umask_mode(run: str, tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    assert (0o666 & ~umask) == fs.FILE_MODE

    def private(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)

    fs.atomic_write(tmp_path / "p.bin", private)
    assert (tmp_path / "p.bin").stat().st_mode & 0o777 == fs.FILE_MODE
    rc, stdout, _ = blendae(
        "compress", save(tmp_path / "a.png"), "-o", tmp_path / "a.bae", "--model", run
    )
    assert rc == 0 and Path(stdout[0]).stat().st_mode & 0o777 == fs.FILE_MODE


def test_network_calls_are_bounded_by_pixels() -> None:
    assert images.batches(list(range(10)), 100_000, 300_000) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
        [9],
    ]
    assert images.batches([0, 1], 4 << 20) == [[0], [1]]
    assert tiles(10, 4, 1) == [(0, 5, 0, 4), (3, 9, 4, 8), (7, 10, 8, 10)]


def test_tiled_coding_equals_untiled() -> None:
    """The bitstream does not depend on the tiling; decoding differs by at most one level."""
    from blendae.models.factorized import FactorizedPrior

    torch.manual_seed(0)
    whole, tiled = FactorizedPrior(N=8, M=4), FactorizedPrior(N=8, M=4)
    whole.update()
    tiled.load_state_dict(whole.state_dict())
    tiled.tile, tiled.tile_above = 32, 1000  # tiles of 32 pixels for anything above 1,000
    for model in (whole, tiled):
        model.eval()
    x = torch.rand(2, 3, 72, 152)
    with torch.inference_mode():
        strings = whole.compress(x)
        assert tiled.compress(x) == strings
        difference = whole.decompress(strings, (72, 152)) - tiled.decompress(strings, (72, 152))
    assert float(difference.abs().max()) * 255 <= 1
