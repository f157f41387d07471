#!/usr/bin/env bash
# Train blendae's general codec: one variable-rate model (`gained`: the zoo's hyperprior with
# its checkerboard context, plus gain units) for every kind of tiny image, then export it
# into the package as src/blendae/zoo/general.{safetensors,json}.
#
#   BLENDAE_MIRROR=/path/to/mirror scripts/train_general.sh [EPOCHS] [extra train options]
#
# Data: a mixture (`--data mix:...`) of CIFAR-10, MNIST and Fashion-MNIST alone and the
# blends of each pair, with partners re-drawn every epoch and each source flipped, rotated,
# transposed and inverted at random, so digits on white, sideways photos and gray images are
# all training data. Every image draws its own quality (0-100) and is weighed by that
# quality's λ, log-evenly spaced over [0.002, 0.3], so the one network learns the whole
# rate-distortion curve. The weights start from the zoo's q3 (a fixed-rate model of the same
# architecture trained on the study's blends); the gains start at the quantizer steps λ
# implies. Epochs are scored on a validation hold-out of 6,000 training images (each part
# in proportion), never on the test sets. Gradient clipping and the loop's collapse guard
# keep it stable; the run is resumable: run the script again (or `blendae train --resume
# runs/general --epochs N`) after an interruption. Since 0.13 the run ends by calibrating
# its exact decoders' ranges on 384 training images (the shipped model, trained before, was
# calibrated afterwards by scripts/calibrate_zoo.py, on 300 images of each set). Extra
# options go to `blendae train` (e.g. --device cuda --batch-size 256 --lr 3e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-12}
shift || true
RUN=${RUN:-runs/general}
ARGS='{"N": 64, "M": 32, "Nh": 32, "Z": 16, "ste": true, "context": 64, "levels": 6, "lmbda": [0.002, 0.3], "quality": 64}'
DATA=mix:cifar10,mnist,fashion-mnist,blend:cifar10+mnist,blend:cifar10+fashion-mnist,blend:mnist+fashion-mnist

if [[ -f "$RUN/checkpoint.safetensors" ]]; then
    blendae train --resume "$RUN" --epochs "$EPOCHS" "$@"
else
    blendae train --model gained --model-args "$ARGS" --init-from src/blendae/zoo/q3.json \
        --data "$DATA" --augment hflip,rot90,transpose,invert --pairing random --preset unit \
        --epochs "$EPOCHS" --batch-size 64 --lr 2e-4 --lr-schedule cosine --clip-grad 1 \
        --val 6000 --seed 0 --out "$RUN" --no-tensorboard "$@"
fi
