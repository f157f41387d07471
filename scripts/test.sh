#!/usr/bin/env bash
# Quick start, command 2: set up, then lint and run the test suite.
# End-to-end tests on the real datasets run when BLENDAE_MIRROR points at a mirror.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
python -m pytest -q "$@"
