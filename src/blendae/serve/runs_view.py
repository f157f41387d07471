"""The runs view's reading: run folders under one root, read defensively.

A run name from the client is never joined to a path before it passes `run_folder`: one
plain folder name, resolved inside the root. A broken run folder (missing or unreadable
files, bad JSON) is reported as broken with the reason, never raised.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from blendae.errors import BlendaeError
from blendae.runs import (
    CONFIG,
    FINAL,
    LOSS_PLOT,
    METRICS,
    RECONSTRUCTIONS,
    SUMMARY,
    load_config,
)

IMAGES = (LOSS_PLOT, RECONSTRUCTIONS)  # the only files the page serves from a run folder
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # one folder name, no separators
MAX_TEXT_BYTES = 1 << 20  # config, final, summary: read at most this much of each
MAX_METRIC_LINES = 100_000


class RunNameError(BlendaeError):
    """A run name that is not a plain folder name inside the runs folder."""


class RunNotFound(BlendaeError):
    """A well-formed run name with no run folder."""


def run_folder(root: Path, name: str) -> Path:
    """The folder `root/name`, after checking that `name` is one plain name inside `root`."""
    if not _NAME.fullmatch(name) or name in (".", "..") or ".." in name:
        raise RunNameError(
            f"bad run name {name!r}: use a folder name of letters, digits, '.', '_' and '-'"
        )
    base = root.resolve()
    folder = (base / name).resolve()
    if not folder.is_relative_to(base) or folder == base:
        raise RunNameError(f"bad run name {name!r}: it leads outside the runs folder")
    if not folder.is_dir():
        raise RunNotFound(f"no run {name!r} in {root}")
    return folder


def run_file(root: Path, name: str, file: str) -> Path:
    """One of the run's plots (IMAGES), confined to its folder; others raise RunNameError."""
    if file not in IMAGES:
        raise RunNameError(f"bad file {file!r}: the page serves only {', '.join(IMAGES)}")
    folder = run_folder(root, name)
    path = (folder / file).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise RunNotFound(f"run {name!r} has no {file}")
    return path


def _read_text(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_TEXT_BYTES:,} bytes")
    return data.decode("utf-8", errors="replace")


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and ±inf (which Python's json reads) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _read_json(path: Path) -> dict[str, Any]:
    value = json.loads(_read_text(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} holds a {type(value).__name__}, not an object")
    return _finite(value)


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """metrics.jsonl records; a bad line is skipped and reported, not fatal."""
    records, problems = [], []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if number > MAX_METRIC_LINES:
                problems.append(f"{path.name}: only the first {MAX_METRIC_LINES:,} lines read")
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                problems.append(f"{path.name} line {number} is not JSON")
                continue
            if isinstance(record, dict):
                records.append(_finite(record))
            else:
                problems.append(f"{path.name} line {number} is not an object")
    return records, problems


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def read_run(folder: Path, *, details: bool = False) -> dict[str, Any]:
    """What the page shows of one run folder; `problems` lists what could not be read.

    A run is `broken` when its config is missing or a file it has cannot be read; a run
    still training (or stopped) has no final.json yet, which is noted but not broken.
    """
    problems: list[str] = []
    unreadable = False

    def attempt(file: str, reader: Any, default: Any) -> Any:
        nonlocal unreadable
        path = folder / file
        if not path.is_file():
            problems.append(f"no {file}" + (" (not evaluated yet)" if file == FINAL else ""))
            return default
        try:
            return reader(path)
        except (OSError, ValueError, BlendaeError) as exc:  # JSON/Unicode errors: ValueErrors
            problems.append(f"cannot read {file}: {exc}")
            unreadable = True
            return default

    # The config is read as training reads it (validated, older files migrated).
    config = attempt(CONFIG, lambda path: dataclasses.asdict(load_config(path.parent)), {})
    final = attempt(FINAL, _read_json, {})
    metrics, metric_problems = attempt(METRICS, _read_metrics, ([], []))
    problems += metric_problems
    last = metrics[-1] if metrics else {}
    planned = _number(config.get("epochs"))
    done = _number(last.get("epoch"))
    # wall time as summary.md counts it: the epochs' own seconds (training + evaluation)
    epoch_seconds = [x for r in metrics if (x := _number(r.get("seconds"))) is not None]
    seconds = sum(epoch_seconds) if epoch_seconds else None
    run: dict[str, Any] = {
        "name": folder.name,
        "broken": not config or unreadable,
        "problems": problems,
        "model": config.get("model") if isinstance(config.get("model"), str) else None,
        "data": config.get("data") if isinstance(config.get("data"), str) else None,
        "preset": config.get("preset") if isinstance(config.get("preset"), str) else None,
        "protocol": config.get("protocol") if isinstance(config.get("protocol"), str) else None,
        "epochs": int(done) if done is not None else None,  # completed, from metrics.jsonl
        "epochs_planned": int(planned) if planned is not None else None,  # config.json's
        "test_loss": _number(final.get("test_loss")),
        "test_psnr": _number(final.get("test_psnr")),
        "test_ssim": _number(final.get("test_ssim")),
        "seconds": seconds,
        "images": [f for f in IMAGES if (folder / f).is_file()],
    }
    if details:
        run["config"] = config
        run["final"] = final
        run["metrics"] = metrics
        run["summary"] = attempt(SUMMARY, _read_text, None)
    return run


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every folder directly under `root`, by name; a missing root has no runs."""
    if not root.is_dir():
        return []
    runs = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        try:
            folder = run_folder(root, entry.name)
        except BlendaeError:
            continue  # files, odd names, links that lead outside the root
        runs.append(read_run(folder))
    return runs
