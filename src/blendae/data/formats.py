"""Readers for the official MNIST (IDX) and CIFAR-10 (binary and python) files.

The parsers are pure functions over bytes that check every structural promise of the
format (magic numbers, dimensions, exact lengths, label ranges, record counts) and raise
a `BlendaeError` naming the file and the broken promise, so they are tested on tiny
fixtures. Archives are read member by member from the .tar.gz, never extracted to disk;
CIFAR-10 python batches are unpickled by an unpickler that can build numpy arrays only.

Every decompressed stream is read in chunks up to the bytes its expected record counts
need (plus `_SLACK`) and refused beyond that, so a decompression bomb costs no more
memory than the real file would.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Container, Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from blendae.errors import BlendaeError

SPLITS = ("train", "test")
CIFAR_VARIANTS = ("binary", "python")
_REFETCH = "the file is corrupt or not the official one: delete it from the cache and fetch again"
_READ_CHUNK = 1 << 20
# Bytes allowed past what the expected records need: enough that a file a few records off
# still reaches the parsers (whose messages say what is wrong), far too little to matter.
_SLACK = 1 << 16


@dataclass(frozen=True)
class Counts:
    """Record counts the readers insist on. The defaults are the official datasets';
    tiny test fixtures pass their own, so the checks on real data stay exact."""

    mnist_train: int = 60_000
    mnist_test: int = 10_000
    cifar_batch: int = 10_000  # records in each of the 5 train batches and the test batch


OFFICIAL_COUNTS = Counts()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BlendaeError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


# ---------------------------------------------------------------- MNIST (IDX)


def _parse_idx(data: bytes, *, name: str, ndim: int, what: str) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions, as a writable array."""
    magic = 0x0800 | ndim
    if len(data) < 4:
        raise BlendaeError(f"{name}: {len(data)} bytes is too short for an IDX header; {_REFETCH}")
    if data[:2] != b"\0\0" or data[2] != 0x08:
        found = int.from_bytes(data[:4], "big")
        raise BlendaeError(
            f"{name}: magic number 0x{found:08x}, expected 0x{magic:08x} (IDX {what}); {_REFETCH}"
        )
    if data[3] != ndim:
        raise BlendaeError(
            f"{name}: the IDX header declares {data[3]} dimensions, expected {ndim} ({what}); "
            f"{_REFETCH}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BlendaeError(f"{name}: truncated inside the IDX header; {_REFETCH}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + prod(shape)
    if len(data) != expected:
        how = "truncated" if len(data) < expected else f"{len(data) - expected:,} trailing bytes"
        dims = "×".join(str(d) for d in shape)
        raise BlendaeError(
            f"{name}: {len(data):,} bytes, but its header ({dims}) implies {expected:,}: {how}; "
            f"{_REFETCH}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def parse_idx_images(data: bytes, *, name: str = "IDX file") -> np.ndarray:
    """IDX image file bytes (magic 0x00000803) -> (N, H, W) uint8."""
    return _parse_idx(data, name=name, ndim=3, what="images")


def _check_labels(labels: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise BlendaeError(
            f"{name}: label {labels[bad[0]]} at index {bad[0]}, expected 0..9; {_REFETCH}"
        )


def parse_idx_labels(data: bytes, *, name: str = "IDX file") -> np.ndarray:
    """IDX label file bytes (magic 0x00000801) -> (N,) uint8 with every label in 0..9."""
    labels = _parse_idx(data, name=name, ndim=1, what="labels")
    _check_labels(labels, name)
    return labels


def _read_at_most(stream: io.BufferedIOBase, limit: int) -> bytes | None:
    """All of `stream` if it holds at most `limit` bytes, else None (after reading at most
    `limit` + 1 of them: memory stays within the limit however long the stream is)."""
    out = io.BytesIO()
    while chunk := stream.read(min(_READ_CHUNK, limit + 1 - out.tell())):
        if out.tell() + len(chunk) > limit:
            return None
        out.write(chunk)
    return out.getvalue()


def read_gzip(path: Path, *, limit: int) -> bytes:
    """The decompressed content of a .gz file, or an error saying it is damaged or holds
    more than `limit` bytes (decompression stops there: a gzip bomb is refused cheaply)."""
    try:
        with gzip.open(path, "rb") as f:
            data = _read_at_most(f, limit)
    except FileNotFoundError:
        raise BlendaeError(f"{path} does not exist; fetch the dataset again") from None
    except (OSError, EOFError, zlib.error) as e:
        raise BlendaeError(
            f"{path} is not a valid gzip file ({e}): it is truncated or corrupt; delete it "
            f"and fetch again"
        ) from e
    if data is None:
        raise BlendaeError(
            f"{path} decompresses to more than {limit:,} bytes, more than the records it should "
            f"hold can take, so blendae stopped reading it; {_REFETCH}"
        )
    return data


# The official file and member names: the one table sources, parsers and tests use.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _member_path(files: dict[str, Path], name: str) -> Path:
    try:
        return files[name]
    except KeyError:
        raise BlendaeError(
            f"{name} is not among the files given ({', '.join(sorted(files)) or 'none'}); "
            f"pass the dict that fetch() returns for this dataset"
        ) from None


def read_mnist(
    files: dict[str, Path], split: str, *, counts: Counts = OFFICIAL_COUNTS
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST `split` from the files `fetch("mnist", ...)` returns.

    Returns images (N, 28, 28) uint8 and labels (N,) uint8, where N must equal the
    split's count in `counts` (the official 60,000 / 10,000 by default).
    """
    _check_split(split)
    images_name, labels_name = MNIST_FILES[split]
    images_path, labels_path = _member_path(files, images_name), _member_path(files, labels_name)
    expected = counts.mnist_train if split == "train" else counts.mnist_test
    # IDX headers: magic + 3 dimensions (images), magic + 1 dimension (labels)
    images_limit, labels_limit = 16 + expected * 28 * 28 + _SLACK, 8 + expected + _SLACK
    images = parse_idx_images(read_gzip(images_path, limit=images_limit), name=str(images_path))
    labels = parse_idx_labels(read_gzip(labels_path, limit=labels_limit), name=str(labels_path))
    if images.shape[1:] != (28, 28):
        raise BlendaeError(
            f"{images_path}: images are {images.shape[1]}×{images.shape[2]}, MNIST's are "
            f"28×28; {_REFETCH}"
        )
    if len(images) != len(labels):
        raise BlendaeError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels; one of them is not the official file: delete both from "
            f"the cache and fetch again"
        )
    if len(images) != expected:
        raise BlendaeError(
            f"{images_path} holds {len(images):,} images, the MNIST {split} split has "
            f"{expected:,}; {_REFETCH}"
        )
    return images, labels


# ---------------------------------------------------------------- CIFAR-10 archives


CIFAR_ARCHIVES = {"binary": "cifar-10-binary.tar.gz", "python": "cifar-10-python.tar.gz"}
CIFAR_MEMBERS = {
    "binary": {
        "train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
        "test": ["cifar-10-batches-bin/test_batch.bin"],
    },
    "python": {
        "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
        "test": ["cifar-10-batches-py/test_batch"],
    },
}
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_RECORD = 1 + _CIFAR_PIXELS  # label byte, then R, G, B planes, each 32×32 row-major
# Bytes per record of a pickled python batch, at most: the pixels, a label, a file name
# (the official ones: 3,072 + about 32 bytes per record).
_CIFAR_PICKLED_RECORD = _CIFAR_PIXELS + 512
# Members other than the batches (batches.meta, readme.html) and the tar headers, at most.
_CIFAR_ARCHIVE_EXTRA = 1 << 20


def _member_limit(variant: str, counts: Counts) -> int:
    """The most bytes a batch member of `variant` may hold, given the records it must hold."""
    per_record = _CIFAR_RECORD if variant == "binary" else _CIFAR_PICKLED_RECORD
    return counts.cifar_batch * per_record + _SLACK


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdir():
        return "directory"
    return "special file"


def _check_member(
    tar_path: Path, member: tarfile.TarInfo, found: Container[str], limit: int
) -> None:
    """Refuse a wanted member that is a duplicate, not a regular file, or over `limit` bytes."""
    if member.name in found:
        raise BlendaeError(f"{tar_path}: member {member.name} appears twice; {_REFETCH}")
    if not member.isreg():
        raise BlendaeError(
            f"{tar_path}: member {member.name} is a {_kind(member)}, expected a regular file; "
            f"{_REFETCH}"
        )
    if member.size > limit:
        raise BlendaeError(
            f"{tar_path}: member {member.name} holds {member.size:,} bytes, more than the "
            f"{limit:,} its records can take, so blendae does not read it; {_REFETCH}"
        )


def _read_members(tar_path: Path, names: Sequence[str], limit: int) -> dict[str, bytes]:
    """The members `names` of a .tar.gz, read in one forward pass, nothing written to disk.

    Each must hold at most `limit` bytes (checked before it is read), and the archive is
    abandoned once it runs past room for six such batches plus a little: decompression
    stops at what the real archive needs, both in memory and in time.
    """
    wanted, found = set(names), {}
    archive_limit = 6 * limit + _CIFAR_ARCHIVE_EXTRA  # 5 train batches + the test batch
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    _check_member(tar_path, member, found, limit)
                if member.offset_data + member.size > archive_limit:
                    raise BlendaeError(
                        f"{tar_path}: member {member.name} ends past byte "
                        f"{member.offset_data + member.size:,} of the archive, which should "
                        f"hold at most {archive_limit:,} bytes; {_REFETCH}"
                    )
                if member.name not in wanted:
                    continue
                stream = tar.extractfile(member)
                assert stream is not None, "extractfile returns a stream for regular members"
                data = _read_at_most(stream, member.size)
                assert data is not None, "a member's stream ends at its declared size"
                found[member.name] = data
    except FileNotFoundError:
        raise BlendaeError(f"{tar_path} does not exist; fetch the dataset again") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise BlendaeError(f"{tar_path} is not a readable .tar.gz archive ({e}); {_REFETCH}") from e
    missing = [n for n in names if n not in found]
    if missing:
        raise BlendaeError(f"{tar_path} lacks the member(s) {', '.join(missing)}; {_REFETCH}")
    return found


def _check_count(records: int, where: str, counts: Counts) -> None:
    if records != counts.cifar_batch:
        raise BlendaeError(
            f"{where}: {records:,} records, a CIFAR-10 batch has {counts.cifar_batch:,}; {_REFETCH}"
        )


def _parse_cifar_binary_batch(
    data: bytes, where: str, counts: Counts
) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % _CIFAR_RECORD:
        raise BlendaeError(
            f"{where}: {len(data):,} bytes is not a whole number of {_CIFAR_RECORD:,}-byte "
            f"records (1 label byte + 3,072 pixel bytes); {_REFETCH}"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    _check_count(len(records), where, counts)
    _check_labels(records[:, 0], where)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


def read_cifar_binary(
    tar_path: Path, split: str, *, counts: Counts = OFFICIAL_COUNTS
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 `split` from cifar-10-binary.tar.gz: images (N, 3, 32, 32) uint8, labels (N,).

    Train is data_batch_1..5 concatenated in order; test is test_batch.
    """
    _check_split(split)
    names = CIFAR_MEMBERS["binary"][split]
    members = _read_members(tar_path, names, _member_limit("binary", counts))
    batches = [_parse_cifar_binary_batch(members[n], f"{tar_path}:{n}", counts) for n in names]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# numpy's own array-reconstruction function, under whichever module this numpy defines it
_reconstruct = np.empty(0).__reduce__()[0]
# Every global a CIFAR-10 python batch references; strings, lists and dicts need none.
_BATCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 (the official files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and nothing else.

    `find_class` resolves only `_BATCH_GLOBALS`, so a pickle naming any other callable
    (`os.system`, ...) is refused before anything is called.
    """

    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise BlendaeError(
                f"{self._where}: the pickle refers to {module}.{name}, which a CIFAR-10 batch "
                f"never needs, so blendae refuses to load it; {_REFETCH} (or use the binary "
                f"variant)"
            ) from None


def _parse_cifar_python_batch(
    data: bytes, where: str, counts: Counts
) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _BatchUnpickler(data, where).load()
    except BlendaeError:
        raise
    except Exception as e:  # a damaged pickle fails in many ways (EOFError, ValueError, ...)
        raise BlendaeError(f"{where}: not a readable pickle ({e!r}); {_REFETCH}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise BlendaeError(f"{where}: expected a dict with keys b'data' and b'labels'; {_REFETCH}")
    images, labels = batch[b"data"], batch[b"labels"]
    if not (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 2
        and images.shape[1] == _CIFAR_PIXELS
    ):
        found = f"{type(images).__name__} {getattr(images, 'dtype', '')} {np.shape(images)}"
        raise BlendaeError(f"{where}: b'data' is {found}, expected uint8 N×3072; {_REFETCH}")
    if not isinstance(labels, list) or not all(isinstance(v, int) for v in labels):
        raise BlendaeError(f"{where}: b'labels' is not a list of ints; {_REFETCH}")
    if len(labels) != len(images):
        raise BlendaeError(
            f"{where}: {len(images):,} images but {len(labels):,} labels; {_REFETCH}"
        )
    first = next((i for i, v in enumerate(labels) if not 0 <= v <= 9), None)
    if first is not None:
        raise BlendaeError(
            f"{where}: label {labels[first]} at index {first}, expected 0..9; {_REFETCH}"
        )
    _check_count(len(images), where, counts)
    return images.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.uint8)


def read_cifar_python(
    tar_path: Path, split: str, *, counts: Counts = OFFICIAL_COUNTS
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 `split` from cifar-10-python.tar.gz, same layout as `read_cifar_binary`."""
    _check_split(split)
    names = CIFAR_MEMBERS["python"][split]
    members = _read_members(tar_path, names, _member_limit("python", counts))
    batches = [_parse_cifar_python_batch(members[n], f"{tar_path}:{n}", counts) for n in names]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


_CIFAR_READERS = {"binary": read_cifar_binary, "python": read_cifar_python}


def read_cifar(
    files: dict[str, Path],
    split: str,
    variant: str = "binary",
    *,
    counts: Counts = OFFICIAL_COUNTS,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 `split` from the files `fetch("cifar10-<variant>", ...)` returns."""
    if variant not in _CIFAR_READERS:
        raise BlendaeError(
            f"unknown CIFAR-10 variant {variant!r}; valid variants: {', '.join(CIFAR_VARIANTS)}"
        )
    archive = _member_path(files, CIFAR_ARCHIVES[variant])
    return _CIFAR_READERS[variant](archive, split, counts=counts)
