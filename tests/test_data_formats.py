"""The IDX and CIFAR-10 readers on tiny official-format fixtures, and on the real files."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from blendae.data import load_blended
from blendae.data.formats import (
    parse_idx_images,
    parse_idx_labels,
    read_cifar,
    read_cifar_binary,
    read_cifar_python,
    read_gzip,
    read_mnist,
)
from blendae.data.sources import fetch
from blendae.errors import BlendaeError
from conftest import (
    CIFAR_BINARY,
    CIFAR_PYTHON,
    FIXTURE_COUNTS,
    MNIST_FILES,
    TinyDatasets,
    cifar_binary_batch,
    cifar_python_batch,
    idx_bytes,
    write_gz,
    write_sha256sums,
    write_tar_gz,
)

RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8)
LABELS = RNG.integers(0, 10, 20, dtype=np.uint8)

# ---------------------------------------------------------------- IDX


def test_idx_images_and_labels_round_trip() -> None:
    np.testing.assert_array_equal(parse_idx_images(idx_bytes(IMAGES)), IMAGES)
    np.testing.assert_array_equal(parse_idx_labels(idx_bytes(LABELS)), LABELS)
    assert parse_idx_images(idx_bytes(IMAGES)).flags.writeable


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (idx_bytes(IMAGES)[:-1], "truncated"),
        (idx_bytes(IMAGES) + b"\0\0", "2 trailing bytes"),
        (b"\x12\x34" + idx_bytes(IMAGES)[2:], "magic number 0x12340803, expected 0x00000803"),
        (b"\0\0\x0d\x03" + idx_bytes(IMAGES)[4:], "expected 0x00000803"),  # float data type
        (idx_bytes(IMAGES[0]), "declares 2 dimensions, expected 3"),
        (idx_bytes(IMAGES)[:10], "truncated inside the IDX header"),
        (b"\0\0", "too short"),
    ],
)
def test_idx_images_rejects_damage(data: bytes, message: str) -> None:
    with pytest.raises(BlendaeError, match=message) as info:
        parse_idx_images(data, name="train-images-idx3-ubyte.gz")
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "fetch again" in str(info.value)


def test_idx_labels_rejects_image_file_and_bad_label() -> None:
    with pytest.raises(BlendaeError, match="declares 3 dimensions, expected 1"):
        parse_idx_labels(idx_bytes(IMAGES))
    bad = LABELS.copy()
    bad[5] = 10
    with pytest.raises(BlendaeError, match=r"label 10 at index 5, expected 0..9"):
        parse_idx_labels(idx_bytes(bad))


def test_read_gzip_reports_corrupt_and_truncated_files(tmp_path: Path) -> None:
    good = write_gz(tmp_path / "good.gz", b"x" * 1000)
    assert read_gzip(good, limit=10_000) == b"x" * 1000
    not_gzip = tmp_path / "not.gz"
    not_gzip.write_bytes(b"this is not gzip data")
    truncated = tmp_path / "cut.gz"
    truncated.write_bytes(gzip.compress(RNG.bytes(5000))[:-100])
    for path in (not_gzip, truncated):
        with pytest.raises(BlendaeError, match="not a valid gzip file") as info:
            read_gzip(path, limit=10_000)
        assert str(path) in str(info.value)
    with pytest.raises(BlendaeError, match="does not exist"):
        read_gzip(tmp_path / "missing.gz", limit=10_000)


def test_read_gzip_stops_at_its_limit(tmp_path: Path) -> None:
    data = RNG.bytes(3 << 20)  # several read chunks
    path = write_gz(tmp_path / "data.gz", data)
    assert read_gzip(path, limit=len(data)) == data
    with pytest.raises(BlendaeError, match=f"decompresses to more than {len(data) - 1:,} bytes"):
        read_gzip(path, limit=len(data) - 1)


def _mnist_files(mirror: Path) -> dict[str, Path]:
    return {name: mirror / name for pair in MNIST_FILES.values() for name in pair}


@pytest.mark.parametrize("split", ["train", "test"])
def test_read_mnist_on_fixtures(tiny_mirror: Path, tiny_datasets: TinyDatasets, split: str) -> None:
    images, labels = read_mnist(_mnist_files(tiny_mirror), split, counts=FIXTURE_COUNTS)
    np.testing.assert_array_equal(images, tiny_datasets.mnist[split][0])
    np.testing.assert_array_equal(labels, tiny_datasets.mnist[split][1])


def test_read_mnist_insists_on_the_official_counts(tiny_mirror: Path) -> None:
    with pytest.raises(BlendaeError, match="holds 24 images, the MNIST train split has 60,000"):
        read_mnist(_mnist_files(tiny_mirror), "train")


def test_read_mnist_rejects_disagreeing_counts_and_sizes(tmp_path: Path) -> None:
    files = {
        "train-images-idx3-ubyte.gz": write_gz(tmp_path / "i.gz", idx_bytes(IMAGES)),
        "train-labels-idx1-ubyte.gz": write_gz(tmp_path / "l.gz", idx_bytes(LABELS[:19])),
    }
    with pytest.raises(BlendaeError, match=r"20 images but .* 19 labels"):
        read_mnist(files, "train", counts=FIXTURE_COUNTS)
    files["train-images-idx3-ubyte.gz"] = write_gz(tmp_path / "i.gz", idx_bytes(IMAGES[:, :27]))
    with pytest.raises(BlendaeError, match="27×28, MNIST's are 28×28"):
        read_mnist(files, "train", counts=FIXTURE_COUNTS)


def test_read_mnist_rejects_unknown_split_and_missing_file(tiny_mirror: Path) -> None:
    with pytest.raises(BlendaeError, match="unknown split 'validation'; valid splits: train, test"):
        read_mnist(_mnist_files(tiny_mirror), "validation")
    with pytest.raises(BlendaeError, match=r"t10k-images-idx3-ubyte.gz is not among the files"):
        read_mnist({}, "test")


# ---------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("variant", ["binary", "python"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_read_cifar_on_fixtures(
    tiny_mirror: Path, tiny_datasets: TinyDatasets, variant: str, split: str
) -> None:
    files = {CIFAR_BINARY: tiny_mirror / CIFAR_BINARY, CIFAR_PYTHON: tiny_mirror / CIFAR_PYTHON}
    images, labels = read_cifar(files, split, variant, counts=FIXTURE_COUNTS)
    assert images.shape == (len(tiny_datasets.cifar[split][0]), 3, 32, 32)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    np.testing.assert_array_equal(images, tiny_datasets.cifar[split][0])
    np.testing.assert_array_equal(labels, tiny_datasets.cifar[split][1])


def test_read_cifar_rejects_unknown_variant(tiny_mirror: Path) -> None:
    with pytest.raises(BlendaeError, match="unknown CIFAR-10 variant 'matlab'; valid variants"):
        read_cifar({}, "train", "matlab")


def _binary_members(data: TinyDatasets) -> list[tuple[str, bytes] | tarfile.TarInfo]:
    prefix = "cifar-10-batches-bin"
    members: list[tuple[str, bytes] | tarfile.TarInfo] = [
        (f"{prefix}/data_batch_{i}.bin", cifar_binary_batch(images, labels))
        for i, (images, labels) in enumerate(data.cifar_batches("train"), start=1)
    ]
    members.append((f"{prefix}/test_batch.bin", cifar_binary_batch(*data.cifar["test"])))
    return members


def test_cifar_binary_missing_member(tmp_path: Path, tiny_datasets: TinyDatasets) -> None:
    members = [m for m in _binary_members(tiny_datasets) if not m[0].endswith("_3.bin")]
    tar = write_tar_gz(tmp_path / CIFAR_BINARY, members)
    with pytest.raises(BlendaeError, match=r"lacks the member.*data_batch_3.bin") as info:
        read_cifar_binary(tar, "train", counts=FIXTURE_COUNTS)
    assert str(tar) in str(info.value)


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE]
)
def test_cifar_binary_rejects_non_regular_members(
    tmp_path: Path, tiny_datasets: TinyDatasets, kind: bytes
) -> None:
    odd = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    odd.type, odd.linkname = kind, "/etc/passwd"
    members = [*_binary_members(tiny_datasets)[:-1], odd]
    tar = write_tar_gz(tmp_path / CIFAR_BINARY, members)
    with pytest.raises(BlendaeError, match=r"test_batch.bin is a .*, expected a regular file"):
        read_cifar_binary(tar, "test", counts=FIXTURE_COUNTS)
    assert not (tmp_path / "cifar-10-batches-bin").exists()  # nothing extracted to disk


def test_cifar_binary_rejects_duplicate_members(
    tmp_path: Path, tiny_datasets: TinyDatasets
) -> None:
    members = _binary_members(tiny_datasets)
    tar = write_tar_gz(tmp_path / CIFAR_BINARY, [*members, members[-1]])
    with pytest.raises(BlendaeError, match=r"test_batch.bin appears twice"):
        read_cifar_binary(tar, "test", counts=FIXTURE_COUNTS)


def _with_test_batch(tmp_path: Path, test_batch: bytes, python: bool) -> Path:
    """An archive whose only member is the test batch, for the test split's readers."""
    name = CIFAR_PYTHON if python else CIFAR_BINARY
    member = "cifar-10-batches-py/test_batch" if python else "cifar-10-batches-bin/test_batch.bin"
    return write_tar_gz(tmp_path / name, [(member, test_batch)])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "not a whole number of 3,073-byte records"),
        (lambda b: b + b[:3073], "5 records, a CIFAR-10 batch has 4"),
        (lambda b: b"\x0a" + b[1:], "label 10 at index 0, expected 0..9"),
    ],
)
def test_cifar_binary_rejects_bad_batches(
    tmp_path: Path, tiny_datasets: TinyDatasets, mutate: Callable[[bytes], bytes], message: str
) -> None:
    batch = cifar_binary_batch(*tiny_datasets.cifar["test"])
    tar = _with_test_batch(tmp_path, mutate(batch), python=False)
    with pytest.raises(BlendaeError, match=message):
        read_cifar_binary(tar, "test", counts=FIXTURE_COUNTS)


def test_cifar_binary_insists_on_the_official_count(tiny_mirror: Path) -> None:
    with pytest.raises(BlendaeError, match="4 records, a CIFAR-10 batch has 10,000"):
        read_cifar_binary(tiny_mirror / CIFAR_BINARY, "test")


def test_cifar_rejects_files_that_are_not_tar_gz(tmp_path: Path) -> None:
    junk = tmp_path / CIFAR_BINARY
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(BlendaeError, match=r"not a readable .tar.gz archive"):
        read_cifar_binary(junk, "train")
    with pytest.raises(BlendaeError, match="does not exist"):
        read_cifar_binary(tmp_path / "missing.tar.gz", "train")


def test_cifar_python_accepts_numpy2_pickles(tmp_path: Path, tiny_datasets: TinyDatasets) -> None:
    images, labels = tiny_datasets.cifar["test"]
    batch = {b"data": images.reshape(4, -1), b"labels": [int(v) for v in labels]}
    tar = _with_test_batch(tmp_path, pickle.dumps(batch, protocol=4), python=True)
    got_images, got_labels = read_cifar_python(tar, "test", counts=FIXTURE_COUNTS)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


class _Exploit:
    """Unpickling this would run a shell command creating `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_cifar_python_refuses_forbidden_globals_without_running_them(
    tmp_path: Path, tiny_datasets: TinyDatasets
) -> None:
    marker = tmp_path / "pwned"
    images = tiny_datasets.cifar["test"][0].reshape(4, -1)
    evil = pickle.dumps({b"data": images, b"labels": _Exploit(marker)}, protocol=4)
    tar = _with_test_batch(tmp_path, evil, python=True)
    with pytest.raises(BlendaeError, match=r"refers to (posix|os|nt)\.system.*refuses to load it"):
        read_cifar_python(tar, "test", counts=FIXTURE_COUNTS)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([1, 2, 3], "expected a dict with keys b'data' and b'labels'"),
        ({b"data": np.zeros((4, 3072), np.uint8)}, "expected a dict"),
        ({b"data": np.zeros((4, 3071), np.uint8), b"labels": [0] * 4}, "expected uint8 N×3072"),
        ({b"data": np.zeros((4, 3072), np.int32), b"labels": [0] * 4}, "expected uint8 N×3072"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "4 images but 3 labels"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 0, 11, 0]}, "label 11 at index 2"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": "0000"}, "not a list of ints"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0] * 3}, "3 records, a CIFAR-10"),
    ],
)
def test_cifar_python_validates_batches(
    tmp_path: Path, tiny_datasets: TinyDatasets, batch: object, message: str
) -> None:
    tar = _with_test_batch(tmp_path, pickle.dumps(batch, protocol=4), python=True)
    with pytest.raises(BlendaeError, match=message):
        read_cifar_python(tar, "test", counts=FIXTURE_COUNTS)


def test_cifar_python_rejects_damaged_pickles(tmp_path: Path, tiny_datasets: TinyDatasets) -> None:
    batch = cifar_python_batch(*tiny_datasets.cifar["test"])
    tar = _with_test_batch(tmp_path, batch[: len(batch) // 2], python=True)
    with pytest.raises(BlendaeError, match="not a readable pickle"):
        read_cifar_python(tar, "test", counts=FIXTURE_COUNTS)


def test_idx_header_layout_is_big_endian() -> None:
    # The fixture writer and the parser could share a byte-order bug; pin the bytes.
    assert idx_bytes(LABELS)[:8] == b"\x00\x00\x08\x01" + struct.pack(">I", 20)


# ---------------------------------------------------------------- decompression bombs


def _zeros_gz(path: Path, head: bytes, zeros: int) -> Path:
    """A .gz of `head` then `zeros` zero bytes, compressed in 1 MiB steps (~1000:1)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    block = bytes(1 << 20)
    parts = [z.compress(head)]
    parts += [z.compress(block) for _ in range(zeros >> 20)]
    parts += [z.compress(bytes(zeros % len(block))), z.flush()]
    path.write_bytes(b"".join(parts))
    return path


BOMB = 200 << 20  # bytes a bomb expands to: far above what any tiny fixture needs


def _traced_peak(call: Callable[[], object]) -> tuple[int, Exception | None]:
    """Peak bytes allocated (as tracemalloc sees them, numpy included) while `call` runs,
    and the exception it raised."""
    tracemalloc.start()
    try:
        call()
    except Exception as e:  # returned to the test, which checks it
        error: Exception | None = e
    else:
        error = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


def test_a_gzip_bomb_on_the_mirror_is_refused_with_bounded_memory(
    tiny_mirror: Path, tmp_path: Path
) -> None:
    """Placed on a mirror with a matching SHA256SUMS, it downloads (it is small) and
    verifies, then decompression stops after the bytes the 24 declared images need."""
    header = struct.pack(">4I", 0x0803, FIXTURE_COUNTS.mnist_train, 28, 28)
    bomb = _zeros_gz(tiny_mirror / "train-images-idx3-ubyte.gz", header, BOMB)
    assert bomb.stat().st_size < 1 << 20
    write_sha256sums(tiny_mirror)
    peak, error = _traced_peak(
        lambda: load_blended(
            "unit",
            mirror=str(tiny_mirror),
            cache=tmp_path / "cache",
            progress=False,
            counts=FIXTURE_COUNTS,
        )
    )
    assert isinstance(error, BlendaeError), error
    assert "train-images-idx3-ubyte.gz decompresses to more than" in str(error)
    assert "fetch again" in str(error)
    assert peak < 8 << 20, f"peak {peak:,} bytes"  # 1 MiB read chunks, never the 200 MiB
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_a_gzip_bomb_costs_no_more_than_the_official_file(tmp_path: Path) -> None:
    """With the official counts the limit is the real file's 47 MB, and so is the memory."""
    images = _zeros_gz(
        tmp_path / "train-images-idx3-ubyte.gz", struct.pack(">4I", 0x0803, 60_000, 28, 28), BOMB
    )
    # the images are refused before the labels (the same file here) are read
    files = {"train-images-idx3-ubyte.gz": images, "train-labels-idx1-ubyte.gz": images}
    needed = 16 + 60_000 * 28 * 28
    peak, error = _traced_peak(lambda: read_mnist(files, "train"))
    assert isinstance(error, BlendaeError), error
    assert "decompresses to more than" in str(error)
    assert needed < peak < needed * 1.25 + (8 << 20), f"peak {peak:,} bytes"


def _zeros_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _write_tar_gz_of_zeros(path: Path, members: list[tuple[str, int]]) -> Path:
    """A .tar.gz of members filled with `size` zero bytes each, streamed (never in memory)."""

    class Zeros(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:
            b[:] = bytes(len(b))
            return len(b)

    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, size in members:
            tar.addfile(_zeros_member(name, size), io.BufferedReader(Zeros()))
    return path


@pytest.mark.parametrize(
    ("variant", "name", "member"),
    [
        ("binary", CIFAR_BINARY, "cifar-10-batches-bin/test_batch.bin"),
        ("python", CIFAR_PYTHON, "cifar-10-batches-py/test_batch"),
    ],
)
def test_an_oversized_cifar_member_is_refused_before_it_is_read(
    tmp_path: Path, variant: str, name: str, member: str
) -> None:
    tar = _write_tar_gz_of_zeros(tmp_path / name, [(member, 32 << 20)])
    peak, error = _traced_peak(
        lambda: read_cifar({name: tar}, "test", variant, counts=FIXTURE_COUNTS)
    )
    assert isinstance(error, BlendaeError), error
    assert f"member {member} holds 33,554,432 bytes, more than the" in str(error)
    assert peak < 4 << 20, f"peak {peak:,} bytes"


def test_an_archive_longer_than_cifar_is_abandoned(tmp_path: Path) -> None:
    """A huge member the reader does not want, before the one it does: it stops there."""
    tar = _write_tar_gz_of_zeros(
        tmp_path / CIFAR_BINARY,
        [("cifar-10-batches-bin/padding", 32 << 20), ("cifar-10-batches-bin/test_batch.bin", 10)],
    )
    with pytest.raises(BlendaeError, match=r"member cifar-10-batches-bin/padding ends past byte"):
        read_cifar_binary(tar, "test", counts=FIXTURE_COUNTS)


# ---------------------------------------------------------------- the real files


@pytest.fixture(scope="module")
def real_files(real_cache: Path) -> dict[str, Path]:
    mirror = os.environ["BLENDAE_MIRROR"]
    files = fetch("mnist", mirror=mirror, cache=real_cache, progress=False)
    return files | fetch("cifar10-binary", mirror=mirror, cache=real_cache, progress=False)


@pytest.mark.mirror
def test_real_mnist_has_official_counts_and_labels(real_files: dict[str, Path]) -> None:
    train_images, train_labels = read_mnist(real_files, "train")
    test_images, test_labels = read_mnist(real_files, "test")
    assert train_images.shape == (60_000, 28, 28) and test_images.shape == (10_000, 28, 28)
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Published pixel statistics of MNIST train (README): mean 0.1307, std 0.3081.
    pixels = train_images.astype(np.float64) / 255
    assert abs(pixels.mean() - 0.1307) < 5e-4 and abs(pixels.std() - 0.3081) < 5e-4


@pytest.mark.mirror
def test_real_cifar_binary_has_official_counts(real_files: dict[str, Path]) -> None:
    train_images, train_labels = read_cifar(real_files, "train")
    test_images, test_labels = read_cifar(real_files, "test")
    assert train_images.shape == (50_000, 3, 32, 32) and test_images.shape == (10_000, 3, 32, 32)
    assert np.bincount(train_labels).tolist() == [5_000] * 10
    assert np.bincount(test_labels).tolist() == [1_000] * 10
    means = (train_images.astype(np.float64) / 255).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(means, [0.4913, 0.4821, 0.4465], atol=5e-4)  # README's values
