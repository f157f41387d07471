"""Where the dataset files come from, declared as data, and the one layer that fetches them.

A file reaches `cache/raw/<name>` only after it is verified: an official download against
the publisher's pinned MD5 (and size where published), a mirror's file against the
`SHA256SUMS` the mirror serves. Nothing unverified ever sits under a final name. Each
verified file gets a small sidecar (`<name>.verified.json`) recording its size, mtime and
digests, so later calls trust it without re-hashing 170 MB; a sidecar whose size or mtime
no longer match the file forces a re-check. Sources are consulted only for files the
cache does not already hold verified.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, url2pathname, urlopen

import platformdirs
from tqdm import tqdm

from blendae import __version__
from blendae.data.formats import CIFAR_ARCHIVES, MNIST_FILES
from blendae.errors import BlendaeError
from blendae.files import ensure_dir, file_lock, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One official file, the checksum its publisher pins, and the most bytes any source
    may send for it (a download stops there, so a file that never ends cannot fill the disk)."""

    name: str
    md5: str
    max_size: int  # bytes: the official size plus a margin, see `_cap`
    size: int | None = None  # bytes, where the publisher states it


def _cap(official_size: int) -> int:
    """The most bytes accepted for a file whose official copy has `official_size`: 10 % more,
    at least 1 MiB more, since mirrors recompress (the mirror's cifar-10-binary.tar.gz is
    173,275,513 bytes, its train-labels-idx1-ubyte.gz 28,902). For CIFAR-10 this exceeds
    even the uncompressed archive, so any honest gzip of the official content fits."""
    return official_size + max(official_size // 10, 1 << 20)


@dataclass(frozen=True)
class Dataset:
    """A dataset's official files and the base URLs that serve them, tried in order."""

    name: str
    urls: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    # a subfolder of the mirror and of the cache, where file names clash with another
    # dataset's (Fashion-MNIST's are MNIST's)
    folder: str = ""


_KRIZ = ("https://www.cs.toronto.edu/~kriz/",)

# Official names, URLs and checksums (as listed in the mirror README); variants differ only here.
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "mnist",
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            (  # official sizes from the publisher's listing; mirrors' copies differ a little
                RemoteFile(
                    MNIST_FILES["train"][0],
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    _cap(9_912_422),
                ),
                RemoteFile(
                    MNIST_FILES["train"][1], "d53e105ee54ea40749a09fcbcd1e9432", _cap(28_881)
                ),
                RemoteFile(
                    MNIST_FILES["test"][0], "9fb629c4189551a2d022fa330f9573f3", _cap(1_648_877)
                ),
                RemoteFile(MNIST_FILES["test"][1], "ec29112dd5afa0611ce80d1b7f02629c", _cap(4_542)),
            ),
        ),
        Dataset(
            "fashion-mnist",
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            (  # official sizes from Zalando's repository; Debian's gzip wrappers differ
                RemoteFile(
                    MNIST_FILES["train"][0], "8d4fb7e6c68d591d4c3dfef9ec88bf0d", _cap(26_421_880)
                ),
                RemoteFile(
                    MNIST_FILES["train"][1], "25c81989df183df01b3e8a0aad5dffbe", _cap(29_515)
                ),
                RemoteFile(
                    MNIST_FILES["test"][0], "bef4ecab320f06d8554ea6380940ec79", _cap(4_422_102)
                ),
                RemoteFile(MNIST_FILES["test"][1], "bb300cfdad3c16e7a12a480ee83cd310", _cap(5_148)),
            ),
            folder="fashion-mnist",
        ),
        Dataset(
            "cifar10-binary",
            _KRIZ,
            (
                RemoteFile(
                    CIFAR_ARCHIVES["binary"],
                    "c32a1d4ab5d03f1284b67883e8d87530",
                    _cap(170_052_171),
                    170_052_171,
                ),
            ),
        ),
        Dataset(
            "cifar10-python",
            _KRIZ,
            (
                RemoteFile(
                    CIFAR_ARCHIVES["python"],
                    "c58f30108f718f92721af3b95e74349a",
                    _cap(170_498_071),
                    170_498_071,
                ),
            ),
        ),
    )
}

_URL_SCHEMES = ("http://", "https://", "file://")
_SUMS = "SHA256SUMS"
_SUMS_MAX = 1 << 20  # bytes: a SHA256SUMS for a few files is well under 1 KiB
_SIDECAR_SUFFIX = ".verified.json"
_CHUNK = 1 << 20
_ATTEMPTS = 4  # per URL; transient network failures only
_BACKOFF_S = 1.0  # sleeps 1, 2, 4 s between attempts
_TIMEOUT_S = 30.0  # per blocking socket operation, not per file


# ---------------------------------------------------------------- choosing mirror and cache


def resolve_mirror(value: str | None) -> str | None:
    """The mirror to fetch from: `value` (the CLI), else $BLENDAE_MIRROR, else None.

    None means the official URLs. A URL (http, https, file) is returned as given; a
    directory is made absolute against the current directory, so it keeps its meaning.
    """
    origin = "--mirror" if value else "BLENDAE_MIRROR"
    chosen = value or os.environ.get("BLENDAE_MIRROR") or None
    if chosen is None:
        return None
    if chosen.lower().startswith(_URL_SCHEMES):
        return chosen
    path = Path(os.path.abspath(Path(chosen).expanduser()))  # normalizes '..'
    if not path.is_dir():
        raise BlendaeError(
            f"mirror {chosen!r} (from {origin}) is neither a directory nor an http(s):// or "
            f"file:// URL; point {origin} at a folder or URL serving the official dataset "
            f"files plus a {_SUMS} file"
        )
    return str(path)


def resolve_cache(value: str | Path | None) -> Path:
    """The cache root: `value` (the CLI), else $BLENDAE_CACHE, else the user cache dir."""
    chosen = value or os.environ.get("BLENDAE_CACHE") or platformdirs.user_cache_dir("blendae")
    return Path(os.path.abspath(Path(chosen).expanduser()))


# ---------------------------------------------------------------- verification records


@dataclass(frozen=True)
class _Expected:
    """What a fetched file must match, and where that value comes from (for messages)."""

    algo: str  # "sha256" or "md5"
    digest: str
    size: int | None
    origin: str
    max_size: int  # a transfer stops beyond this many bytes


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + _SIDECAR_SUFFIX)


def _verified_record(path: Path) -> dict[str, Any] | None:
    """The sidecar of `path` if the file is unchanged since it was verified, else None."""
    try:
        stat = path.stat()
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fresh = (
        isinstance(record, dict)
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(record.get("sha256"), str)
    )
    return record if fresh else None


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _mismatch(path: Path, expected: _Expected, sha256: str, md5: str) -> str | None:
    """Why `path` fails `expected`, or None when it passes."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"expected {expected.size:,} bytes ({expected.origin}), got {size:,}"
    actual = sha256 if expected.algo == "sha256" else md5
    if actual != expected.digest:
        return f"expected {expected.algo} {expected.digest} ({expected.origin}), got {actual}"
    return None


def _record(path: Path, sha256: str, md5: str, source: str) -> None:
    stat = path.stat()
    record = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256,
        "md5": md5,
        "source": source,
    }
    write_json(_sidecar(path), record)


def verified_sha256(path: Path) -> str:
    """SHA-256 of a cached file: from its sidecar when still fresh, else computed."""
    record = _verified_record(path)
    return record["sha256"] if record else _digests(path)[0]


# ---------------------------------------------------------------- transfers


class _Unavailable(Exception):
    """A source could not deliver a file (unreachable, not found); not yet user-facing."""


class _TooLarge(Exception):
    """A source sends (or announces) more bytes than the file can have; never retried."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size  # the announced size, or None when the stream simply went on


def _request(url: str, offset: int) -> Request:
    headers = {"User-Agent": f"blendae/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return Request(url, headers=headers)


def _open(url: str, offset: int) -> tuple[io.BufferedIOBase, int | None, int]:
    """Open `url` for reading from byte `offset` where the source allows it.

    Returns the stream, the file's full size if known, and the offset actually honoured:
    0 when an HTTP server ignores the Range header (or rejects it) and sends everything.
    """
    if url.lower().startswith("file:"):
        stream = Path(url2pathname(urlparse(url).path)).open("rb")  # noqa: SIM115 (caller closes)
        size = os.fstat(stream.fileno()).st_size
        start = offset if offset <= size else 0
        stream.seek(start)
        return stream, size, start
    try:
        response = urlopen(_request(url, offset), timeout=_TIMEOUT_S)
    except HTTPError as e:
        if e.code != 416 or not offset:
            raise
        # 416: the partial file is no prefix this server can continue; start over.
        response = urlopen(_request(url, 0), timeout=_TIMEOUT_S)
    start = offset if offset and response.status == 206 else 0
    length = response.headers.get("Content-Length")
    return response, (start + int(length) if length is not None else None), start


def _is_transient(error: Exception) -> bool:
    """Whether retrying the same URL later may succeed."""
    if isinstance(error, HTTPError):
        return error.code in (408, 429) or error.code >= 500
    if isinstance(error, URLError):
        # No DNS answer means offline: retrying only delays the helpful error.
        return not isinstance(error.reason, socket.gaierror)
    return isinstance(error, (TimeoutError, ConnectionError, http.client.HTTPException))


def _describe(error: Exception) -> str:
    if isinstance(error, HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, URLError):
        return str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _local_write_error(part: Path, e: OSError) -> BlendaeError:
    """A failure writing the cache (disk full, permissions), kept apart from network errors."""
    return BlendaeError(
        f"cannot write {part}: {e.strerror}; free disk space or choose another cache "
        f"with --cache DIR or BLENDAE_CACHE=DIR"
    )


def _copy(stream: io.BufferedIOBase, part: Path, start: int, bar: tqdm, limit: int) -> None:
    """Append `stream` to `part` from byte `start` (0: truncate first), raising `_TooLarge`
    as soon as `part` would grow past `limit` bytes (with at most `limit` written)."""
    try:
        out = part.open("ab" if start else "wb")
    except OSError as e:
        raise _local_write_error(part, e) from e
    written = start
    with out:
        # Asking for one byte past the limit tells "exactly at the limit" from "beyond it".
        while chunk := stream.read(min(_CHUNK, limit + 1 - written)):
            if written + len(chunk) > limit:
                raise _TooLarge(None)
            try:
                out.write(chunk)
            except OSError as e:
                raise _local_write_error(part, e) from e
            written += len(chunk)
            bar.update(len(chunk))


def _too_large(url: str, part: Path, limit: int, announced: int | None) -> BlendaeError:
    """Delete `part` and say that `url` serves more than the file can have."""
    part.unlink(missing_ok=True)
    name = part.name.removesuffix(".part")
    found = (
        f"is {announced:,} bytes, more than the {limit:,}"
        if announced is not None
        else f"goes on past the {limit:,} bytes"
    )
    return BlendaeError(
        f"{name} from {url} {found} the official file can have at most, so blendae "
        f"stopped the download and deleted its partial file: the source "
        f"serves something else (a wrong, endless or malicious file); replace that file on the "
        f"mirror with the official one, or use another mirror or the official URLs"
    )


def _transfer(url: str, part: Path, progress: bool, limit: int) -> bool:
    """Bring `part` to the full content of `url`, resuming what is already there.

    Retries transient failures with exponential backoff. Returns whether any bytes were
    kept from before the call (so a checksum failure may be the old prefix's fault).
    Refuses (deleting `part`) a source that announces or sends more than `limit` bytes.
    """
    kept_old_bytes = False
    attempt = 0
    while True:
        attempt += 1
        offset = part.stat().st_size if part.exists() else 0
        if offset > limit:  # left by an older blendae, which had no limit
            part.unlink()
            offset = 0
        try:
            stream, size, start = _open(url, offset)
            kept_old_bytes = kept_old_bytes or (attempt == 1 and start > 0)
            with (
                stream,
                tqdm(
                    total=size,
                    initial=start,
                    desc=part.name.removesuffix(".part"),
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    disable=not (progress and sys.stderr.isatty()),  # no bar lines in logs
                    leave=False,
                ) as bar,
            ):
                if size is not None and size > limit:
                    raise _TooLarge(size)
                _copy(stream, part, start, bar, limit)
            got = part.stat().st_size
            if size is not None and got < size:
                raise ConnectionError(f"transfer ended after {got:,} of {size:,} bytes")
            return kept_old_bytes
        except _TooLarge as e:
            raise _too_large(url, part, limit, e.size) from None
        except (OSError, http.client.HTTPException) as e:
            if not _is_transient(e):
                raise _Unavailable(f"{url}: {_describe(e)}") from e
            if attempt == _ATTEMPTS:
                raise _Unavailable(f"{url}: {_describe(e)} ({_ATTEMPTS} attempts)") from e
            delay = _BACKOFF_S * 2 ** (attempt - 1)
            log.warning("%s: %s; retrying in %.0f s", url, _describe(e), delay)
            time.sleep(delay)


def _download(url: str, dest: Path, expected: _Expected, progress: bool) -> None:
    """Download `url` to `dest` via `dest.part`; rename only after the checksum matches."""
    part = dest.with_name(dest.name + ".part")
    resumed = _transfer(url, part, progress, expected.max_size)
    sha256, md5 = _digests(part)
    problem = _mismatch(part, expected, sha256, md5)
    if problem and resumed:
        log.warning("%s: resumed download fails its checksum; downloading it again", dest.name)
        part.unlink()
        _transfer(url, part, progress, expected.max_size)
        sha256, md5 = _digests(part)
        problem = _mismatch(part, expected, sha256, md5)
    if problem:
        part.unlink()
        raise BlendaeError(
            f"checksum mismatch for {dest.name} from {url}: {problem}. The bad file was "
            f"deleted; fetch again, and if it persists the source's copy (or its checksum "
            f"list) is wrong: use another mirror or the official URLs"
        )
    os.replace(part, dest)
    _record(dest, sha256, md5, url)


def _obtain(dest: Path, urls: list[str], expected: _Expected, progress: bool) -> None:
    """Make `dest` a verified copy: re-check what is there, else try `urls` in order."""
    if dest.exists():
        sha256, md5 = _digests(dest)
        if _mismatch(dest, expected, sha256, md5) is None:
            _record(dest, sha256, md5, f"re-verified against {expected.origin}")
            return
        log.info("%s in the cache does not match %s; fetching it again", dest, expected.origin)
    failures = []
    for url in urls:
        try:
            _download(url, dest, expected, progress)
            return
        except _Unavailable as e:
            failures.append(str(e))
    raise _Unavailable("; ".join(failures))


# ---------------------------------------------------------------- mirrors


def _is_url(mirror: str) -> bool:
    return mirror.lower().startswith(_URL_SCHEMES)


def _mirror_url(mirror: str, name: str) -> str:
    if _is_url(mirror):
        return f"{mirror.rstrip('/')}/{name}"
    return Path(mirror, name).absolute().as_uri()


def _mirror_sums(mirror: str) -> dict[str, str]:
    """The mirror's SHA256SUMS as {file name: sha256}."""
    try:
        stream, _, _ = _open(_mirror_url(mirror, _SUMS), 0)
        with stream:
            data = stream.read(_SUMS_MAX + 1)
        if len(data) > _SUMS_MAX:
            raise BlendaeError(
                f"the {_SUMS} of mirror {mirror} is over {_SUMS_MAX:,} bytes, far more than a "
                f"checksum list of a few files; regenerate it with sha256sum"
            )
        text = data.decode("utf-8")
    except (OSError, http.client.HTTPException, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError) or (isinstance(e, HTTPError) and e.code == 404):
            raise BlendaeError(
                f"mirror {mirror} has no {_SUMS} file; a mirror must list the sha256 of every "
                f"file it serves (create it there with: sha256sum *.gz > {_SUMS})"
            ) from e
        raise BlendaeError(f"cannot read {_SUMS} from mirror {mirror}: {_describe(e)}") from e
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        digest = fields[0].lower()
        if len(fields) != 2 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BlendaeError(
                f"{_SUMS} of mirror {mirror}, line {number}: {line!r} is not "
                f"'<64 hex digits>  <file name>' (sha256sum format); regenerate it with sha256sum"
            )
        sums[fields[1].strip().removeprefix("*")] = digest
    return sums


def _mirror_plan(mirror: str, missing: list[RemoteFile]) -> dict[str, tuple[list[str], _Expected]]:
    sums = _mirror_sums(mirror)
    unlisted = [f.name for f in missing if f.name not in sums]
    if unlisted:
        raise BlendaeError(
            f"the {_SUMS} of mirror {mirror} has no entry for {', '.join(unlisted)}, so "
            f"blendae cannot verify it; add the file and its sha256sum line to the mirror, or "
            f"use a mirror that serves it"
        )
    origin = f"{_SUMS} of mirror {mirror}"
    return {
        f.name: (
            [_mirror_url(mirror, f.name)],
            _Expected("sha256", sums[f.name], None, origin, f.max_size),
        )
        for f in missing
    }


def _official_plan(
    spec: Dataset, missing: list[RemoteFile]
) -> dict[str, tuple[list[str], _Expected]]:
    return {
        f.name: (
            [base + f.name for base in spec.urls],
            _Expected("md5", f.md5, f.size, "official checksum", f.max_size),
        )
        for f in missing
    }


# ---------------------------------------------------------------- the entry point


def _dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise BlendaeError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}"
        ) from None


def _unavailable_message(spec: Dataset, mirror: str | None, names: list[str], why: str) -> str:
    files = ", ".join(names)
    if mirror is not None:
        return (
            f"cannot get {files} from mirror {mirror} ({why}); check that the mirror serves "
            f"these files, or unset --mirror/BLENDAE_MIRROR to download from "
            f"{spec.urls[0]} with internet access"
        )
    return (
        f"cannot get {files}: no mirror is set and the official URLs could not be reached "
        f"({why}). Either point blendae at a mirror serving these files and a {_SUMS} "
        f"(--mirror DIR_OR_URL or BLENDAE_MIRROR=DIR_OR_URL), or run with internet access "
        f"to {' or '.join(spec.urls)}"
    )


def fetch(
    dataset: str, *, mirror: str | None, cache: Path, progress: bool = True
) -> dict[str, Path]:
    """Verified local copies of a dataset's files, as {official file name: path}.

    Idempotent: files already verified in `cache/raw` are used as they are, whatever source
    they came from; only missing or changed files are fetched, from `mirror` (a directory
    or URL, verified against its SHA256SUMS) or, when it is None, the official URLs
    (verified against the pinned official checksums).
    """
    spec = _dataset(dataset)
    raw = ensure_dir(cache / "raw" / spec.folder)
    if mirror and spec.folder:
        mirror = (
            _mirror_url(mirror, spec.folder) if _is_url(mirror) else str(Path(mirror, spec.folder))
        )
    paths = {f.name: raw / f.name for f in spec.files}
    if all(_verified_record(p) for p in paths.values()):
        return paths  # the common case: a few stat calls, no lock, no hashing
    with file_lock(raw / ".lock"):
        missing = [f for f in spec.files if _verified_record(paths[f.name]) is None]
        if not missing:  # another process fetched them while we waited
            return paths
        plan = _mirror_plan(mirror, missing) if mirror else _official_plan(spec, missing)
        for i, f in enumerate(missing):
            urls, expected = plan[f.name]
            try:
                _obtain(paths[f.name], urls, expected, progress)
            except _Unavailable as e:
                names = [g.name for g in missing[i:]]
                raise BlendaeError(_unavailable_message(spec, mirror, names, str(e))) from e
    return paths
