"""Fetching: mirror/cache resolution, verification, idempotence, resume, and the errors."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.error import URLError

import platformdirs
import pytest
from tqdm import tqdm

from blendae.data import sources
from blendae.data.sources import fetch, resolve_cache, resolve_mirror, verified_sha256
from blendae.errors import BlendaeError
from conftest import (
    CIFAR_BINARY,
    MNIST_FILES,
    MirrorServer,
    _MirrorHandler,
    server_url,
    write_sha256sums,
)

MNIST_NAMES = [name for pair in MNIST_FILES.values() for name in pair]
BIG = "train-images-idx3-ubyte.gz"  # the largest tiny MNIST file, for partial-download tests
Opened = tuple[io.BufferedIOBase, int | None, int]  # what sources._open returns


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries happen at once: the tests check their count, not the waiting."""
    monkeypatch.setattr(sources, "_BACKOFF_S", 0.0)


def _record_opens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Log every (file name, offset) the fetch layer opens, still really opening it."""
    calls: list[tuple[str, int]] = []
    real_open = sources._open

    def recording(url: str, offset: int) -> Opened:
        calls.append((url.rsplit("/", 1)[-1], offset))
        return real_open(url, offset)

    monkeypatch.setattr(sources, "_open", recording)
    return calls


def _forbid_transfers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail on any data file being transferred (reading a mirror's SHA256SUMS is fine)."""
    real_open = sources._open

    def checked(url: str, offset: int) -> Opened:
        if not url.endswith("/SHA256SUMS"):
            raise AssertionError(f"unexpected transfer of {url}")
        return real_open(url, offset)

    monkeypatch.setattr(sources, "_open", checked)


# ---------------------------------------------------------------- resolution


def test_resolve_mirror_prefers_cli_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("BLENDAE_MIRROR", str(tmp_path / "b"))
    assert resolve_mirror(str(tmp_path / "a")) == str(tmp_path / "a")
    assert resolve_mirror(None) == str(tmp_path / "b")
    monkeypatch.setenv("BLENDAE_MIRROR", "")
    assert resolve_mirror(None) is None
    monkeypatch.delenv("BLENDAE_MIRROR")
    assert resolve_mirror(None) is None


def test_resolve_mirror_relative_dirs_and_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "shared")
    assert resolve_mirror("datasets") == str(tmp_path / "shared" / "datasets")
    assert resolve_mirror("../shared/datasets") == str(tmp_path / "shared" / "datasets")
    for url in ("https://example.org/mnist/", "http://host:8000", "file:///srv/data"):
        assert resolve_mirror(url) == url


def test_resolve_mirror_rejects_missing_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BlendaeError, match=r"mirror '.*nowhere' \(from --mirror\) is neither"):
        resolve_mirror(str(tmp_path / "nowhere"))
    monkeypatch.setenv("BLENDAE_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(BlendaeError, match=r"from BLENDAE_MIRROR"):
        resolve_mirror(None)


def test_resolve_cache_prefers_cli_then_env_then_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLENDAE_CACHE", str(tmp_path / "env"))
    assert resolve_cache(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_cache(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_cache(None) == tmp_path / "env"
    monkeypatch.delenv("BLENDAE_CACHE")
    assert resolve_cache(None) == Path(platformdirs.user_cache_dir("blendae"))


# ---------------------------------------------------------------- fetching from a directory


def test_fetch_copies_and_verifies_from_a_directory(tiny_mirror: Path, tmp_path: Path) -> None:
    paths = fetch("mnist", mirror=str(tiny_mirror), cache=tmp_path / "cache", progress=False)
    assert sorted(paths) == sorted(MNIST_NAMES)
    for name, path in paths.items():
        assert path == tmp_path / "cache" / "raw" / name
        assert path.read_bytes() == (tiny_mirror / name).read_bytes()
        record = json.loads(path.with_name(name + ".verified.json").read_text())
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["size"] == path.stat().st_size
    assert not list((tmp_path / "cache" / "raw").glob("*.part"))


def test_fetch_is_idempotent(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = fetch("cifar10-binary", mirror=str(tiny_mirror), cache=cache, progress=False)
    stat = first[CIFAR_BINARY].stat()
    _forbid_transfers(monkeypatch)
    # Verified files are reused whatever the source: mirror, another mirror, or none.
    for mirror in (str(tiny_mirror), None, "https://unreachable.invalid/"):
        again = fetch("cifar10-binary", mirror=mirror, cache=cache, progress=False)
        assert again == first
    after = first[CIFAR_BINARY].stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_fetch_reverifies_without_copying_when_the_sidecar_is_lost(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = fetch("cifar10-binary", mirror=str(tiny_mirror), cache=cache, progress=False)[
        CIFAR_BINARY
    ]
    sidecar = path.with_name(path.name + ".verified.json")
    sidecar.unlink()
    _forbid_transfers(monkeypatch)
    fetch("cifar10-binary", mirror=str(tiny_mirror), cache=cache, progress=False)
    assert "re-verified" in json.loads(sidecar.read_text())["source"]


def test_fetch_refetches_a_changed_file(tiny_mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = fetch("cifar10-binary", mirror=str(tiny_mirror), cache=cache, progress=False)[
        CIFAR_BINARY
    ]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same size, other content, newer mtime: the sidecar no longer vouches
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    fetch("cifar10-binary", mirror=str(tiny_mirror), cache=cache, progress=False)
    assert path.read_bytes() == (tiny_mirror / CIFAR_BINARY).read_bytes()


def test_checksum_mismatch_deletes_the_file_and_names_both_digests(
    tiny_mirror: Path, tmp_path: Path
) -> None:
    wrong = "0" * 64
    (tiny_mirror / "SHA256SUMS").write_text(f"{wrong}  {CIFAR_BINARY}\n")
    actual = hashlib.sha256((tiny_mirror / CIFAR_BINARY).read_bytes()).hexdigest()
    with pytest.raises(BlendaeError) as info:
        fetch("cifar10-binary", mirror=str(tiny_mirror), cache=tmp_path / "cache", progress=False)
    message = str(info.value)
    assert f"checksum mismatch for {CIFAR_BINARY}" in message
    assert f"expected sha256 {wrong}" in message and f"got {actual}" in message
    assert "deleted" in message
    assert not any((tmp_path / "cache" / "raw").glob(CIFAR_BINARY + "*"))


def test_mirror_without_sha256sums(tiny_mirror: Path, tmp_path: Path) -> None:
    (tiny_mirror / "SHA256SUMS").unlink()
    with pytest.raises(BlendaeError, match=r"mirror .* has no SHA256SUMS file; .* sha256sum"):
        fetch("mnist", mirror=str(tiny_mirror), cache=tmp_path / "cache", progress=False)


def test_mirror_whose_sha256sums_lacks_a_file(tiny_mirror: Path, tmp_path: Path) -> None:
    write_sha256sums(tiny_mirror, MNIST_NAMES[1:])
    with pytest.raises(
        BlendaeError, match=f"SHA256SUMS of mirror .* has no entry for {MNIST_NAMES[0]}"
    ):
        fetch("mnist", mirror=str(tiny_mirror), cache=tmp_path / "cache", progress=False)


def test_mirror_with_a_malformed_sha256sums(tiny_mirror: Path, tmp_path: Path) -> None:
    with (tiny_mirror / "SHA256SUMS").open("a") as f:
        f.write("not-a-digest  something.gz\n")
    with pytest.raises(BlendaeError, match=r"line 7: 'not-a-digest  something.gz' is not"):
        fetch("mnist", mirror=str(tiny_mirror), cache=tmp_path / "cache", progress=False)


def test_mirror_that_lists_a_file_it_does_not_serve(tiny_mirror: Path, tmp_path: Path) -> None:
    (tiny_mirror / BIG).unlink()
    with pytest.raises(BlendaeError, match=f"cannot get {BIG}.* from mirror"):
        fetch("mnist", mirror=str(tiny_mirror), cache=tmp_path / "cache", progress=False)


def test_unknown_dataset_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(
        BlendaeError, match=r"unknown dataset 'svhn'; valid names: cifar10-binary, "
    ):
        fetch("svhn", mirror=None, cache=tmp_path)


def test_unwritable_cache(tmp_path: Path, tiny_mirror: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(BlendaeError, match=r"cannot create directory .*--cache DIR"):
        fetch("mnist", mirror=str(tiny_mirror), cache=blocker, progress=False)


def test_verified_sha256_uses_and_matches_the_file(tiny_mirror: Path, tmp_path: Path) -> None:
    path = fetch("cifar10-binary", mirror=str(tiny_mirror), cache=tmp_path, progress=False)[
        CIFAR_BINARY
    ]
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert verified_sha256(path) == expected
    path.with_name(path.name + ".verified.json").unlink()
    assert verified_sha256(path) == expected


# ---------------------------------------------------------------- official URLs


def test_no_mirror_and_no_network_names_files_and_both_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def offline(url: str, offset: int) -> None:
        attempts.append(url)
        raise URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(sources, "_open", offline)
    with pytest.raises(BlendaeError) as info:
        fetch("mnist", mirror=None, cache=tmp_path, progress=False)
    message = str(info.value)
    for name in MNIST_NAMES:
        assert name in message
    assert "--mirror DIR_OR_URL" in message and "BLENDAE_MIRROR" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "name resolution" in message
    assert len(attempts) == 2  # each official URL once: no DNS means offline, no retries
    assert "\n" not in message


def test_transient_failures_are_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def timing_out(url: str, offset: int) -> None:
        attempts.append(url)
        raise TimeoutError("timed out")

    monkeypatch.setattr(sources, "_open", timing_out)
    with pytest.raises(BlendaeError, match=r"timed out \(4 attempts\)"):
        fetch("cifar10-binary", mirror=None, cache=tmp_path, progress=False)
    assert len(attempts) == sources._ATTEMPTS


def _md5_pins(monkeypatch: pytest.MonkeyPatch, mirror: Path, urls: tuple[str, ...]) -> None:
    spec = sources.DATASETS["mnist"]
    files = tuple(
        replace(f, md5=hashlib.md5((mirror / f.name).read_bytes()).hexdigest()) for f in spec.files
    )
    monkeypatch.setitem(sources.DATASETS, "mnist", replace(spec, urls=urls, files=files))


def test_official_download_falls_back_to_the_next_url(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead, live = (tmp_path / "gone").as_uri() + "/", tiny_mirror.as_uri() + "/"
    _md5_pins(monkeypatch, tiny_mirror, (dead, live))
    paths = fetch("mnist", mirror=None, cache=tmp_path / "cache", progress=False)
    for name, path in paths.items():
        assert path.read_bytes() == (tiny_mirror / name).read_bytes()
        assert (
            json.loads(path.with_name(name + ".verified.json").read_text())["source"] == live + name
        )


def test_official_md5_and_size_are_enforced(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sources.DATASETS["mnist"]
    monkeypatch.setitem(
        sources.DATASETS, "mnist", replace(spec, urls=(tiny_mirror.as_uri() + "/",))
    )
    with pytest.raises(
        BlendaeError,
        match=f"mismatch for {MNIST_NAMES[0]}.*expected md5 {spec.files[0].md5} "
        r"\(official checksum\)",
    ):
        fetch("mnist", mirror=None, cache=tmp_path, progress=False)
    _md5_pins(monkeypatch, tiny_mirror, (tiny_mirror.as_uri() + "/",))
    pinned = sources.DATASETS["mnist"]
    sized = replace(pinned, files=tuple(replace(f, size=123) for f in pinned.files))
    monkeypatch.setitem(sources.DATASETS, "mnist", sized)
    with pytest.raises(BlendaeError, match=r"expected 123 bytes \(official checksum\), got"):
        fetch("mnist", mirror=None, cache=tmp_path, progress=False)


# ---------------------------------------------------------------- URL mirrors and resume


def test_file_url_mirror(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _record_opens(monkeypatch)
    paths = fetch("mnist", mirror=tiny_mirror.as_uri(), cache=tmp_path, progress=False)
    assert all(p.read_bytes() == (tiny_mirror / n).read_bytes() for n, p in paths.items())
    assert sorted(opened) == sorted([("SHA256SUMS", 0)] + [(n, 0) for n in MNIST_NAMES])


def test_file_url_mirror_resumes_a_partial_download(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = (tiny_mirror / BIG).read_bytes()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / f"{BIG}.part").write_bytes(full[: len(full) // 2])
    opened = _record_opens(monkeypatch)
    paths = fetch("mnist", mirror=tiny_mirror.as_uri(), cache=tmp_path, progress=False)
    assert (BIG, len(full) // 2) in opened
    assert paths[BIG].read_bytes() == full
    assert not (raw / f"{BIG}.part").exists()


def test_a_bad_partial_download_is_restarted_once(
    tiny_mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = (tiny_mirror / BIG).read_bytes()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / f"{BIG}.part").write_bytes(b"\xff" * (len(full) // 2))  # a stale, wrong prefix
    opened = _record_opens(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="blendae"):
        paths = fetch("mnist", mirror=tiny_mirror.as_uri(), cache=tmp_path, progress=False)
    assert [o for o in opened if o[0] == BIG] == [(BIG, len(full) // 2), (BIG, 0)]
    assert paths[BIG].read_bytes() == full
    assert "resumed download fails its checksum" in caplog.text


def test_http_mirror(http_mirror: MirrorServer, tmp_path: Path) -> None:
    paths = fetch("mnist", mirror=server_url(http_mirror) + "/", cache=tmp_path, progress=False)
    assert all(p.read_bytes() == (http_mirror.root / n).read_bytes() for n, p in paths.items())
    assert ("SHA256SUMS", None) in http_mirror.seen


def test_http_dropped_connection_resumes_with_a_range_request(
    http_mirror: MirrorServer, tmp_path: Path
) -> None:
    size = (http_mirror.root / BIG).stat().st_size
    http_mirror.cut_once = {BIG}
    paths = fetch("mnist", mirror=server_url(http_mirror), cache=tmp_path, progress=False)
    assert [s for s in http_mirror.seen if s[0] == BIG] == [
        (BIG, None),
        (BIG, f"bytes={size // 2}-"),
    ]
    assert paths[BIG].read_bytes() == (http_mirror.root / BIG).read_bytes()


def test_http_server_ignoring_range_restarts_cleanly(
    http_mirror: MirrorServer, tmp_path: Path
) -> None:
    full = (http_mirror.root / BIG).read_bytes()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / f"{BIG}.part").write_bytes(full[:1000])
    http_mirror.honor_range = False
    paths = fetch("mnist", mirror=server_url(http_mirror), cache=tmp_path, progress=False)
    assert (BIG, "bytes=1000-") in http_mirror.seen
    assert paths[BIG].read_bytes() == full


def test_http_partial_longer_than_the_file_restarts(
    http_mirror: MirrorServer, tmp_path: Path
) -> None:
    full = (http_mirror.root / BIG).read_bytes()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / f"{BIG}.part").write_bytes(full + b"junk")  # the server answers 416
    paths = fetch("mnist", mirror=server_url(http_mirror), cache=tmp_path, progress=False)
    assert [s for s in http_mirror.seen if s[0] == BIG] == [
        (BIG, f"bytes={len(full) + 4}-"),
        (BIG, None),
    ]
    assert paths[BIG].read_bytes() == full


def test_http_mirror_without_sha256sums(http_mirror: MirrorServer, tmp_path: Path) -> None:
    (http_mirror.root / "SHA256SUMS").unlink()
    with pytest.raises(BlendaeError, match=r"has no SHA256SUMS file"):
        fetch("mnist", mirror=server_url(http_mirror), cache=tmp_path, progress=False)


def test_parallel_fetches_download_each_file_once(
    http_mirror: MirrorServer, tmp_path: Path
) -> None:
    """Like torchrun ranks sharing a cache: the second waits, then finds the files verified."""
    url = server_url(http_mirror)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda _: fetch("mnist", mirror=url, cache=tmp_path, progress=False), range(2))
        )
    assert results[0] == results[1]
    downloads = [name for name, _ in http_mirror.seen if name != "SHA256SUMS"]
    assert sorted(downloads) == sorted(MNIST_NAMES)


# ---------------------------------------------------------------- size caps


SMALL = "t10k-labels-idx1-ubyte.gz"  # the file with the smallest cap, for endless sources


def _cap(name: str) -> int:
    return next(f.max_size for d in sources.DATASETS.values() for f in d.files if f.name == name)


def _set_cap(monkeypatch: pytest.MonkeyPatch, name: str, max_size: int) -> None:
    spec = sources.DATASETS["mnist"]
    files = tuple(replace(f, max_size=max_size) if f.name == name else f for f in spec.files)
    monkeypatch.setitem(sources.DATASETS, "mnist", replace(spec, files=files))


def test_every_official_file_has_a_cap_above_its_official_and_mirror_sizes() -> None:
    official = {
        "cifar-10-binary.tar.gz": 170_052_171,
        "cifar-10-python.tar.gz": 170_498_071,
        "train-images-idx3-ubyte.gz": 9_912_422,
        "train-labels-idx1-ubyte.gz": 28_881,
        "t10k-images-idx3-ubyte.gz": 1_648_877,
        "t10k-labels-idx1-ubyte.gz": 4_542,
    }
    mirror = {"cifar-10-binary.tar.gz": 173_275_513, "train-labels-idx1-ubyte.gz": 28_902}
    for name, size in official.items():
        assert max(size, mirror.get(name, 0)) * 1.05 < _cap(name) <= size * 1.1 + (1 << 20)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("as_url", [False, True], ids=["directory", "file-url"])
def test_an_endless_file_on_a_local_mirror_stops_at_the_cap(
    tiny_mirror: Path, tmp_path: Path, as_url: bool
) -> None:
    (tiny_mirror / SMALL).unlink()
    (tiny_mirror / SMALL).symlink_to("/dev/zero")  # still listed in SHA256SUMS
    mirror = tiny_mirror.as_uri() if as_url else str(tiny_mirror)
    with pytest.raises(BlendaeError) as info:
        fetch("mnist", mirror=mirror, cache=tmp_path, progress=False)
    message = str(info.value)
    assert f"{SMALL} from " in message and f"goes on past the {_cap(SMALL):,} bytes" in message
    assert "deleted its partial file" in message and "use another mirror" in message
    assert not list((tmp_path / "raw").glob("*.part"))
    assert not (tmp_path / "raw" / SMALL).exists()


class _EndlessHandler(_MirrorHandler):
    """Streams zeros forever for SMALL, with no Content-Length, until the client hangs up."""

    def do_GET(self) -> None:
        if self.path.lstrip("/") != SMALL:
            super().do_GET()
            return
        self.server.seen.append((SMALL, self.headers.get("Range")))
        self.send_response(200)
        self.end_headers()
        block = bytes(1 << 16)
        try:
            while True:
                self.wfile.write(block)
        except OSError:  # the client closed the connection
            pass


def test_an_endless_http_stream_stops_at_the_cap(http_mirror: MirrorServer, tmp_path: Path) -> None:
    http_mirror.RequestHandlerClass = _EndlessHandler
    with pytest.raises(BlendaeError, match=f"{SMALL} from .* goes on past the {_cap(SMALL):,}"):
        fetch("mnist", mirror=server_url(http_mirror), cache=tmp_path, progress=False)
    assert [s for s in http_mirror.seen if s[0] == SMALL] == [(SMALL, None)]  # no retry
    assert not list((tmp_path / "raw").glob("*.part"))


@pytest.mark.parametrize("over", [0, 1])
def test_a_file_over_the_cap_is_refused_before_it_is_read(
    http_mirror: MirrorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over: int
) -> None:
    """A size announced by Content-Length (or a file's size) over the cap stops at once;
    a file exactly at the cap is fine."""
    size = (http_mirror.root / BIG).stat().st_size
    _set_cap(monkeypatch, BIG, size - over)
    opened = _record_opens(monkeypatch)
    for mirror in (server_url(http_mirror), str(http_mirror.root)):
        cache = tmp_path / mirror.replace("/", "_").replace(":", "_")
        if not over:
            fetch("mnist", mirror=mirror, cache=cache, progress=False)
            continue
        with pytest.raises(
            BlendaeError, match=f"{BIG} from .* is {size:,} bytes, more than the {size - 1:,} the"
        ):
            fetch("mnist", mirror=mirror, cache=cache, progress=False)
        assert not list((cache / "raw").glob("*.part"))
    assert opened.count((BIG, 0)) == 2  # one request per mirror: no retries


def test_copy_stops_exactly_past_the_limit(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    with tqdm(disable=True) as bar:
        sources._copy(io.BytesIO(b"x" * 10), part, 0, bar, limit=10)
        assert part.read_bytes() == b"x" * 10
        with pytest.raises(sources._TooLarge):
            sources._copy(io.BytesIO(b"x" * 11), part, 0, bar, limit=10)
    assert part.stat().st_size <= 10


def test_an_old_partial_download_over_the_cap_is_discarded(
    tiny_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = (tiny_mirror / BIG).read_bytes()
    _set_cap(monkeypatch, BIG, len(full))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / f"{BIG}.part").write_bytes(full + b"junk")
    opened = _record_opens(monkeypatch)
    paths = fetch("mnist", mirror=tiny_mirror.as_uri(), cache=tmp_path, progress=False)
    assert (BIG, 0) in opened
    assert paths[BIG].read_bytes() == full


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_sha256sums_is_refused(tiny_mirror: Path, tmp_path: Path) -> None:
    (tiny_mirror / "SHA256SUMS").unlink()
    (tiny_mirror / "SHA256SUMS").symlink_to("/dev/zero")
    with pytest.raises(BlendaeError, match=r"SHA256SUMS of mirror .* is over 1,048,576 bytes"):
        fetch("mnist", mirror=str(tiny_mirror), cache=tmp_path, progress=False)
