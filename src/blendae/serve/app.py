"""The web app: static page + a JSON API for the compare and runs views.

Nothing is written anywhere: uploads are read into memory (bounded), coded in memory, and
the results go back as base64 inside the JSON. Errors are JSON `{"error": message}` with a
4xx status, which the page shows as they are.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from blendae.codec import container
from blendae.codec.loader import zoo_entries, zoo_folder
from blendae.errors import BlendaeError
from blendae.serve import compare, runs_view

STATIC = Path(str(resources.files("blendae.serve") / "static"))
SAMPLES = STATIC / "samples"
T = TypeVar("T")


class BodyTooLarge(compare.UploadError):
    """A request body over the upload limit (answered with 413)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int = compare.MAX_UPLOAD_BYTES) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the file is {int(declared):,} bytes; the page takes at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the file is over {limit:,} bytes, the most the page takes")
        chunks.append(chunk)
    return b"".join(chunks)


def _shape(pixels: np.ndarray) -> dict[str, int]:
    h, w = pixels.shape[:2]
    return {"width": w, "height": h, "channels": 1 if pixels.ndim == 2 else 3, "pixels": h * w}


def _point(point: compare.Point, original: np.ndarray) -> dict[str, Any]:
    return {
        **point.summary(original),
        "file": _b64(point.data),  # the coded file itself, for download
        "image": _b64(compare.to_png(point.decoded)),  # what its decoder gives, lossless
    }


def _row(row: compare.Row, pixels: np.ndarray) -> dict[str, Any]:
    return {
        "blendae": _point(row.blendae, pixels),
        "webp": _point(row.webp, pixels),
        "avif": _point(row.avif, pixels),
    }


def _compare_json(data: bytes, quality: int | None = None) -> dict[str, Any]:
    pixels = compare.decode_upload(data)
    rows = compare.compare(pixels, quality)
    return {
        **_shape(pixels),
        "original": {"bytes": len(data), "image": _b64(compare.to_png(pixels))},
        "slider": compare.slider_model(),  # the row the page's quality slider recodes
        "rows": [_row(row, pixels) for row in rows],
    }


def _quality_json(data: bytes, quality: int | None) -> dict[str, Any]:
    """The slider's row alone: the variable-rate model at `quality` and its nearest WebP/AVIF."""
    pixels = compare.decode_upload(data)
    return {**_shape(pixels), "row": _row(compare.at_quality(pixels, quality), pixels)}


def _decode_json(data: bytes) -> dict[str, Any]:
    pixels = compare.decode_bae(data)
    shape = _shape(pixels)
    header = container.unpack(data)[0]
    ids = {name: bytes.fromhex(meta["id"]) for name, meta in zoo_entries().items()}
    return {
        **shape,
        # a shipped model's file (it decoded)
        "model": next(name for name, i in ids.items() if container.made_by(header, i)),
        "quality": header.quality,  # None: a fixed-rate model's file
        "bytes": len(data),
        "bpp": 8 * len(data) / shape["pixels"],
        "image": _b64(compare.to_png(pixels)),
    }


MODEL_SUFFIXES = {".json": "application/json", ".safetensors": "application/octet-stream"}


def model_file(file: str) -> Path:
    """A shipped model's NAME.json or NAME.safetensors, for bae.js (docs/format.md, "Static
    model files for the browser"); anything else is a 404."""
    path = Path(file)
    if path.name != file or path.stem not in zoo_entries() or path.suffix not in MODEL_SUFFIXES:
        raise HTTPException(
            404, f"no model file {file!r}; shipped models: {', '.join(zoo_entries())}"
        )
    return zoo_folder() / file


def _add_error_handlers(app: FastAPI) -> None:
    """Errors become JSON with a message, never a stack trace."""

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(runs_view.RunNotFound)
    async def not_found(request: Request, exc: runs_view.RunNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(BlendaeError)  # bad uploads, corrupt .bae files, bad run names
    async def user_error(request: Request, exc: BlendaeError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, f"bad request: {exc.errors()}")

    @app.exception_handler(Exception)  # a bug: still a message the page can show
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")


def create_app(runs_dir: Path) -> FastAPI:
    """The app serving the page, the compare API and the runs under `runs_dir`."""
    app = FastAPI(title="blendae", docs_url=None, redoc_url=None, openapi_url=None)
    work = threading.Lock()  # one coding job at a time: torch already uses every core

    async def locked(fn: Callable[..., T], data: bytes, *args: Any) -> T:
        def run() -> T:
            with work:
                return fn(data, *args)

        return await run_in_threadpool(run)

    _add_error_handlers(app)

    # ---- the page -----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/models/{file}")
    async def model(file: str) -> FileResponse:
        """The shipped models' files, which bae.js decodes with in the browser."""
        path = model_file(file)
        return FileResponse(path, media_type=MODEL_SUFFIXES[path.suffix])

    # ---- compare --------------------------------------------------------------------------------
    @app.get("/api/models")
    async def models() -> dict[str, Any]:
        return {
            "models": compare.shipped_models(),
            "max_pixels": compare.MAX_PIXELS,
            "slider": compare.slider_model(),  # the variable-rate model, or None
        }

    @app.get("/api/samples")
    async def samples() -> dict[str, Any]:
        names = sorted(p.name for p in SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []
        return {"samples": [f"/static/samples/{name}" for name in names]}

    @app.post("/api/compare")
    async def compare_image(request: Request, quality: str | None = None) -> dict[str, Any]:
        """Body: an image file. Every blendae point with its nearest WebP and AVIF; the
        variable-rate model at `?quality=Q` (0..100, default: its own)."""
        q = compare.parse_quality(quality)  # a bad one is refused before the upload is read
        return await locked(_compare_json, await _read_body(request), q)

    @app.post("/api/quality")
    async def at_quality(request: Request, quality: str | None = None) -> dict[str, Any]:
        """Body: an image file. The slider's row: the variable-rate model at `?quality=Q`
        with the WebP and AVIF files nearest in size."""
        q = compare.parse_quality(quality)
        return await locked(_quality_json, await _read_body(request), q)

    @app.post("/api/decode")
    async def decode(request: Request) -> dict[str, Any]:
        """Body: a .bae file. Its decoded image as PNG."""
        return await locked(_decode_json, await _read_body(request))

    # ---- runs -----------------------------------------------------------------------------------
    @app.get("/api/runs")
    async def runs() -> dict[str, Any]:
        return {"root": str(runs_dir), "runs": runs_view.list_runs(runs_dir)}

    @app.get("/api/runs/{name}")
    async def run(name: str) -> dict[str, Any]:
        return runs_view.read_run(runs_view.run_folder(runs_dir, name), details=True)

    @app.get("/api/runs/{name}/files/{file}")
    async def run_file(name: str, file: str) -> FileResponse:
        return FileResponse(runs_view.run_file(runs_dir, name, file), media_type="image/png")

    return app
