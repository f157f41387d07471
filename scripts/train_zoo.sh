#!/usr/bin/env bash
# Train the shipped codec models (src/blendae/zoo/q1..q4) with the project's own CLI and
# export each into the package: weights (float16) + tables, and a JSON with the command,
# the data and the final metrics.
#
#   BLENDAE_MIRROR=/path/to/mirror scripts/train_zoo.sh
#
# One operating point per λ; all share the architecture and the schedule. Runs go to
# runs/zoo-qN (delete them to retrain). One thread per run: on a small shared CPU that is
# faster than two competing ones.
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-3}
MODEL_ARGS='{"N": 64, "M": 48, "depth": 2, "act": "gdn", "ste": true}'
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

for point in q1:0.012 q2:0.025 q3:0.05 q4:0.1; do
    name=${point%%:*}
    lmbda=${point#*:}
    cmd=(blendae train --model factorized --model-args "$MODEL_ARGS" --codec
         --lambda "$lmbda" --preset unit --epochs "$EPOCHS" --batch-size 16 --lr 2e-3
         --lr-schedule cosine --seed 0 --limit-test 1000 --out "runs/zoo-$name")
    "${cmd[@]}"
    python -m blendae.zoo.export "runs/zoo-$name" "$name" --command "$(printf '%q ' "${cmd[@]}")"
done
