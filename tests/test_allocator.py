"""keep_freed_memory: glibc stops handing freed blocks back, and the coding commands set it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blendae import allocator
from blendae.cli import main

GLIBC = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")

# Three 6 MiB blocks asked for and freed, four times: glibc's defaults map and unmap them or
# trim the heap under them, so each time faults their pages in again.
CHURN = """
import json, resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from blendae.allocator import keep_freed_memory
    assert keep_freed_memory()
counts = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(6 << 20, dtype=np.uint8) for _ in range(3)]
    del blocks
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(counts))
"""


def churn(setting: str) -> list[int]:
    src = str(Path(allocator.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(name, None)  # glibc's own defaults on the other side
    out = subprocess.run(
        [sys.executable, "-c", CHURN, setting], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_freed_blocks_are_reused_without_faulting_them_in_again() -> None:
    default, kept = churn("default"), churn("keep")
    assert sum(default[2:]) > 200  # the churn costs faults by default ...
    assert sum(kept[2:]) * 20 < sum(default[2:])  # ... and almost none once memory is kept


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "confstr", lambda name: None)  # musl answers no version
    assert allocator.keep_freed_memory() is False

    def no_such_name(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "confstr", no_such_name)
    assert allocator.keep_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_a_c_library_without_mallopt_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        def __init__(self, name: object) -> None:
            pass

        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    monkeypatch.setattr(allocator.ctypes, "CDLL", NoMallopt)
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize(
    ("argv", "sets"),
    [
        (["compress", "missing.png", "-o", "out.bae"], True),
        (["decompress", "missing.bae", "-o", "out.png"], True),
        (["evaluate", "missing-run"], False),
        (["separate", "missing.png", "-o", "out"], False),
    ],
)
def test_the_coding_commands_keep_freed_memory(
    argv: list[str], sets: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2  # the missing input is an error after the setting
    assert calls == ([True] if sets else [])
