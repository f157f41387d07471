"""`blendae serve`: a local web page that compares blendae with WebP and AVIF on your images
and shows the runs in a folder. Needs the optional extra: pip install 'blendae[serve]'.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from blendae.errors import BlendaeError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["build_app", "running", "serve"]

MISSING_EXTRA = "blendae serve needs the 'serve' extra: pip install 'blendae[serve]'"


def _require_extra() -> None:
    """Raise the one clear error when FastAPI or uvicorn is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise BlendaeError(MISSING_EXTRA) from exc


def build_app(runs_dir: Path) -> FastAPI:
    """The web app (page + JSON API) for the runs under `runs_dir`; nothing is written."""
    _require_extra()
    from blendae.serve.app import create_app  # imports FastAPI: only with the extra

    return create_app(Path(runs_dir))


def serve(host: str = "127.0.0.1", port: int = 8000, runs_dir: Path = Path("runs")) -> None:
    """Serve the page on http://host:port until interrupted (Ctrl-C).

    Bound to the local machine by default; the page can code any image it is sent, so
    expose it on other interfaces only on a trusted network.
    """
    _require_extra()
    import uvicorn

    app = build_app(runs_dir)
    uvicorn.run(app, host=host, port=port, log_level="info")


@contextmanager
def running(runs_dir: Path, timeout: float = 30) -> Iterator[str]:
    """The app served from a thread on 127.0.0.1, at a port the OS picks; yields its base
    URL (for the tests and benchmarks that drive the page in a browser)."""
    _require_extra()
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the socket is ours before uvicorn starts: no port race
    config = uvicorn.Config(build_app(runs_dir), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise BlendaeError(f"the app did not start within {timeout:.0f} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
