"""Small filesystem helpers shared by the data layer: directories, atomic writes, locks.

Every file the data layer publishes in the cache goes through `atomic_write`, so a reader
sees either the previous file or the complete new one, never a half-written one.
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

_CACHE_FIX = "choose a writable cache with --cache DIR or BLENDAE_CACHE=DIR"


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) or say plainly why the cache cannot live there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BlendaeError(
            f"cannot create cache directory {path}: {e.strerror}; {_CACHE_FIX}"
        ) from e
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` create a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique per writer
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BlendaeError(
            f"cannot write {path}: {e.strerror}; free disk space or {_CACHE_FIX}"
        ) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (stable, diff-friendly)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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
        raise BlendaeError(f"cannot create lock file {path}: {e.strerror}; {_CACHE_FIX}") from e
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
