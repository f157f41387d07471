#!/usr/bin/env bash
# Create .venv (if missing) and install blendae into it. Sourced by run.sh and test.sh.
# torch is installed first and pinned to the CPU build 2.13.0: a bare `torch` requirement
# would pull several GB of CUDA wheels. Set BLENDAE_TORCH to choose another build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet --disable-pip-version-check "${BLENDAE_TORCH:-torch==2.13.0}"
fi
# Reinstall only when pyproject.toml changed since the last install (a stamp of its hash).
stamp=.venv/.blendae-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python -m pip install --quiet --disable-pip-version-check -e ".[test,serve,tensorboard]"
    echo "$want" > "$stamp"
fi
