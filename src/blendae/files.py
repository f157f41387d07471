"""Filesystem helpers for every writer in blendae: directories, atomic writes, locks.

Every file blendae publishes (cache files, checkpoints, metrics, figures, codec output)
goes through `atomic_write`, so a reader sees either the previous file or the complete
new one, never a half-written one, even when a run is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from blendae.errors import BlendaeError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; parallel preparation is then unguarded
    fcntl = None  # type: ignore[assignment]

_FIX = "check that the folder is writable and the disk has space (the cache: --cache DIR)"


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) or say plainly why the cache cannot live there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BlendaeError(f"cannot create directory {path}: {e.strerror}; {_FIX}") from e
    return path


def _read_umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


_UMASK = _read_umask()  # read once: os.umask is process-wide and not thread-safe to probe
FILE_MODE = 0o666 & ~_UMASK  # what open(..., "w") gives a new file: the user's umask


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it is there; never raise (a failed cleanup must not hide
    the error that caused it, e.g. on a read-only file system)."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None], *, replace: bool = True) -> None:
    """Let `write` create a temporary file beside `path`, then rename it over `path`.

    The published file gets the mode a plain new file would (0o666 minus the umask), even
    when `write` created it private (e.g. through mkstemp). With `replace=False` an existing
    `path` is never replaced: that is a `BlendaeError` (a hard link publishes atomically).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique per writer
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except FileExistsError as e:
        _discard(tmp)
        raise BlendaeError(f"{path} already exists; not replacing it") from e
    except OSError as e:
        _discard(tmp)
        raise BlendaeError(f"cannot write {path}: {e.strerror or e}; {_FIX}") from e
    except BaseException:
        _discard(tmp)
        raise


def _publish_new(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` unless `path` exists (FileExistsError), atomically where the
    file system has hard links."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (e.g. some network or FAT file systems)
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    _discard(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace `path` with `text` (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (stable, diff-friendly)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` so parallel processes (e.g. torchrun ranks) that
    prepare the same cache files wait for one another instead of writing them twice."""
    if fcntl is None:
        yield
        return
    try:
        handle = path.open("a")
    except OSError as e:
        raise BlendaeError(f"cannot create lock file {path}: {e.strerror}; {_FIX}") from e
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
