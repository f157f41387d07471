#!/usr/bin/env bash
# Quick start, command 1: set up, then `blendae run` (prepare + train + evaluate + report).
# Extra arguments go to `blendae run`, e.g. `bash scripts/run.sh --model seed --epochs 5`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
blendae run "$@"
