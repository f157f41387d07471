"""`blendae serve`: a local web page that compares blendae with WebP and AVIF on your images
and shows the runs in a folder. Needs the optional extra: pip install 'blendae[serve]'.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from blendae.errors import BlendaeError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["build_app", "serve"]

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
