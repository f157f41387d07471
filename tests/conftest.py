"""Shared fixtures for the data tests: tiny datasets in the official formats, a local
HTTP mirror, and access to the real mirror ($BLENDAE_MIRROR) for the end-to-end tests.

The tiny datasets keep every official file name, header and member name; only the
record counts are small (see FIXTURE_COUNTS), which the readers take as a parameter.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from blendae import cli, runs
from blendae.codec import container
from blendae.config import RunConfig
from blendae.data import BlendedSplits
from blendae.data.formats import CIFAR_ARCHIVES, CIFAR_MEMBERS, MNIST_FILES, Counts
from blendae.models.factorized import FactorizedPrior

# 24 MNIST train digits (the blend uses the first 20), 4 test; CIFAR batches of 4 records.
FIXTURE_COUNTS = Counts(mnist_train=24, mnist_test=4, cifar_batch=4)

CIFAR_BINARY, CIFAR_PYTHON = CIFAR_ARCHIVES["binary"], CIFAR_ARCHIVES["python"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `mirror` unless BLENDAE_MIRROR points at the real dataset files,
    and tests marked `slow` unless BLENDAE_SLOW_TESTS=1."""
    skips = {
        "mirror": None
        if os.environ.get("BLENDAE_MIRROR")
        else pytest.mark.skip(reason="needs the real dataset mirror: set BLENDAE_MIRROR"),
        "slow": None
        if os.environ.get("BLENDAE_SLOW_TESTS") == "1"
        else pytest.mark.skip(reason="slow: set BLENDAE_SLOW_TESTS=1"),
    }
    for item in items:
        for marker, skip in skips.items():
            if skip is not None and marker in item.keywords:
                item.add_marker(skip)


# ---------------------------------------------------------------- official formats, tiny


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0800|ndim, big-endian dims, raw bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def write_tar_gz(path: Path, members: list[tuple[str, bytes] | tarfile.TarInfo]) -> Path:
    """A .tar.gz holding `members` in order: (name, content) regular files, or bare
    TarInfo entries (links, directories, ...)."""
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cifar_binary_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Records of 1 label byte + 3,072 pixel bytes (R, G, B planes), as in *_batch.bin."""
    records = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1)
    return records.astype(np.uint8).tobytes()


_RECONSTRUCT = np.empty(0).__reduce__()[0]


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch can be extended
    """Pickles like Python 2 + numpy 1 did for the official CIFAR-10 python batches: every
    string as a byte string (BINSTRING, loaded as bytes with encoding="bytes") and numpy's
    reconstruct function under its numpy 1 name, numpy.core.multiarray."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj: bytes | str) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj: object) -> bytes:
    f = io.BytesIO()
    _Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


def cifar_python_batch(images: np.ndarray, labels: np.ndarray, title: str = "batch") -> bytes:
    """A pickled batch dict as in cifar-10-batches-py/*: b'data' N×3072 uint8, b'labels'."""
    return py2_pickle(
        {
            b"batch_label": title.encode(),
            b"labels": [int(v) for v in labels],
            b"data": images.reshape(len(images), -1).astype(np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
        }
    )


def write_sha256sums(directory: Path, names: list[str] | None = None) -> Path:
    """A SHA256SUMS in sha256sum format for `names` (default: every file in `directory`)."""
    names = names if names is not None else sorted(p.name for p in directory.iterdir())
    lines = [f"{hashlib.sha256((directory / n).read_bytes()).hexdigest()}  {n}\n" for n in names]
    path = directory / "SHA256SUMS"
    path.write_text("".join(lines))
    return path


@dataclass
class TinyDatasets:
    """The arrays inside the tiny fixture files: {split: (images, labels)}."""

    mnist: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cifar: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def cifar_batches(self, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
        images, labels = self.cifar[split]
        n = FIXTURE_COUNTS.cifar_batch
        return [(images[i : i + n], labels[i : i + n]) for i in range(0, len(images), n)]


def make_tiny_datasets(seed: int = 0) -> TinyDatasets:
    rng = np.random.default_rng(seed)
    data = TinyDatasets()
    n_mnist = {"train": FIXTURE_COUNTS.mnist_train, "test": FIXTURE_COUNTS.mnist_test}
    n_cifar = {"train": 5 * FIXTURE_COUNTS.cifar_batch, "test": FIXTURE_COUNTS.cifar_batch}
    for split in ("train", "test"):
        data.mnist[split] = (
            rng.integers(0, 256, (n_mnist[split], 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_mnist[split], dtype=np.uint8),
        )
        data.cifar[split] = (
            rng.integers(0, 256, (n_cifar[split], 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, n_cifar[split], dtype=np.uint8),
        )
    return data


def write_cifar_archives(directory: Path, data: TinyDatasets) -> None:
    """cifar-10-binary.tar.gz and cifar-10-python.tar.gz with the official member names."""
    binary = [("cifar-10-batches-bin/batches.meta.txt", b"airplane\nautomobile\n")]
    python = [("cifar-10-batches-py/batches.meta", py2_pickle({b"label_names": [b"airplane"]}))]
    batches = [*data.cifar_batches("train"), data.cifar["test"]]
    names = [*CIFAR_MEMBERS["binary"]["train"], *CIFAR_MEMBERS["binary"]["test"]]
    for name, (images, labels) in zip(names, batches, strict=True):
        binary.append((name, cifar_binary_batch(images, labels)))
    names = [*CIFAR_MEMBERS["python"]["train"], *CIFAR_MEMBERS["python"]["test"]]
    for name, (images, labels) in zip(names, batches, strict=True):
        python.append((name, cifar_python_batch(images, labels)))
    write_tar_gz(directory / CIFAR_BINARY, binary)
    write_tar_gz(directory / CIFAR_PYTHON, python)


def write_tiny_mirror(directory: Path, data: TinyDatasets) -> Path:
    """A mirror directory: the six official files, tiny, plus SHA256SUMS."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, (images_name, labels_name) in MNIST_FILES.items():
        images, labels = data.mnist[split]
        write_gz(directory / images_name, idx_bytes(images))
        write_gz(directory / labels_name, idx_bytes(labels))
    write_cifar_archives(directory, data)
    write_sha256sums(directory)
    return directory


@pytest.fixture
def tiny_datasets() -> TinyDatasets:
    return make_tiny_datasets()


@pytest.fixture
def tiny_mirror(tmp_path: Path, tiny_datasets: TinyDatasets) -> Path:
    return write_tiny_mirror(tmp_path / "mirror", tiny_datasets)


@pytest.fixture
def fixture_counts() -> Counts:
    """The record counts of the tiny fixtures, for `load_blended(..., counts=...)`."""
    return FIXTURE_COUNTS


# ---------------------------------------------------------------- runs and codecs


@pytest.fixture
def tiny_splits() -> BlendedSplits:
    """96 train / 40 test random images in [0, 1], as the `unit` preset's splits."""
    g = torch.Generator().manual_seed(123)
    train = torch.rand(96, 3, 32, 32, generator=g)
    return BlendedSplits(train, torch.rand(40, 3, 32, 32, generator=g), "unit", {})


def make_codec_run(folder: Path, seed: int = 0, preset: str = "unit") -> str:
    """A run folder holding a tiny, untrained but updated codec (fast to code with)."""
    torch.manual_seed(seed)
    model = FactorizedPrior(N=8, M=4)
    model.update()
    folder.mkdir(parents=True)
    save_file(model.state_dict(), folder / runs.WEIGHTS)
    config = RunConfig(model="factorized", model_args={"N": 8, "M": 4}, preset=preset, lmbda=0.01)
    runs.save_config(folder, config)
    return str(folder)


@pytest.fixture(scope="session")
def codec_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_codec_run(tmp_path_factory.mktemp("codec") / "run")


# ---------------------------------------------------------------- a local HTTP mirror


class MirrorServer(http.server.ThreadingHTTPServer):
    """Serves a directory like a static HTTP mirror, logging requests for the tests."""

    root: Path
    honor_range: bool = True
    cut_once: set[str]  # names whose next response stops halfway (a dropped connection)
    seen: list[tuple[str, str | None]]  # (name, Range header) of every request


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    server: MirrorServer

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        byte_range = self.headers.get("Range")
        self.server.seen.append((name, byte_range))
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data, start = path.read_bytes(), 0
        if byte_range and self.server.honor_range:
            start = int(byte_range.removeprefix("bytes=").removesuffix("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.server.cut_once:
            self.server.cut_once.discard(name)
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def http_mirror(tiny_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MirrorServer]:
    """`tiny_mirror` served over HTTP on 127.0.0.1 (Range requests honoured by default)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = MirrorServer(("127.0.0.1", 0), _MirrorHandler)
    server.root, server.cut_once, server.seen = tiny_mirror, set(), []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def server_url(server: MirrorServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


# ---------------------------------------------------------------- the real mirror


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session, so the real files are copied and blended only once."""
    return tmp_path_factory.mktemp("real-cache")


# ---------------------------------------------------------------- the CLI in process


def blendae(*argv: str | Path) -> tuple[int, list[str], list[str]]:
    """`blendae ARGV` in process: (exit status, stdout lines, stderr lines)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            rc = int(exc.code or 0)
    return rc, out.getvalue().splitlines(), err.getvalue().splitlines()


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder`: file → hash of its bytes and mode, folder → "dir"."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_dir():
            found[key] = "dir"
        else:
            data = path.read_bytes()
            found[key] = hashlib.sha256(data).hexdigest() + oct(path.stat().st_mode)
    return found


def repack(data: bytes, model_id: bytes, version: int, quality: bytes) -> bytes:
    """The file `data` re-packed as format `version` with these quality bytes (version 3:
    the image byte, gray flag and quality) under a valid checksum, as only a writer bug or a
    forgery makes; `model_id` is the full id of the model that wrote it."""
    header, payload = container.unpack(data)
    h, w = header.height, header.width
    if version in (container.VERSION_COMPACT, container.VERSION_PATCHES):
        size = container._varint(2 * h + (h == w)) + (b"" if h == w else container._varint(w))
        if version == container.VERSION_PATCHES:  # the patch byte: the file's, or 32
            size += bytes([(header.patch or 32) // container.PATCH_UNIT])
        head = data[:2] + bytes([version]) + model_id[:2] + quality + size
        crc = binascii.crc_hqx(model_id, binascii.crc_hqx(payload, binascii.crc_hqx(head, 0)))
        return head + crc.to_bytes(2, "little") + payload
    head = data[:2] + bytes([version]) + model_id + bytes([header.channels]) + quality
    head += container._varint(h) + container._varint(w)
    return head + zlib.crc32(payload, zlib.crc32(head)).to_bytes(4, "little") + payload


def holding(*totals: tuple[int, int, int]) -> torch.Tensor:
    """(1, 64, 8, 8) integer activations with Σ|a| = total at each (i, j, total), 2047 per
    channel at most, zero elsewhere: inputs at an exact convolution's `room`."""
    a = torch.zeros(1, 64, 8, 8)
    for i, j, total in totals:
        full, rest = divmod(total, 2047)
        a[0, :full, i, j], a[0, full, i, j] = 2047.0, float(rest)
    return a
