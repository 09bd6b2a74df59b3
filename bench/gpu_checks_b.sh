#!/usr/bin/env bash
# GPU checks, part B (KiTS, BraTS/LiTS: needs SimpleITK): benchmarks and short GPU runs.
set -uo pipefail
export MEDCHALLENGE_PLAIN=1
PY=${PY:-python3}
W=$(mktemp -d)
$PY bench/kits_predict.py --device cuda --slices 611 --size 512 --width 32 --depth 4 --batch-size 32
$PY bench/brats_inference.py --device cuda --model twopath --pixels 4096
$PY bench/brats_inference.py --device cuda --model inputcascade --pixels 2048
$PY -m medchallenge kits sample --out $W/kits --n-cases 16 --size 256 >/dev/null 2>&1
( cd $W/kits && $PY -m medchallenge kits tile --workers 4 >/dev/null 2>&1 && \
  $PY -m medchallenge kits train --epochs 8 --batch-size 16 --lr 0.002 --patch-size 256 --batch-norm --loss ce-dice \
    --oversample 0.5 --channels-last --workers 4 --out runs/u 2>&1 | grep -E "epoch [0-9]+/[0-9]+: t" | cut -c 21-200 && \
  $PY -m medchallenge kits predict --checkpoint runs/u/best.pt --cases 210-213 --out pred >/dev/null 2>&1 && \
  echo "kits gpu held-out: $($PY -m medchallenge kits evaluate --predictions pred --truth answers --json | cut -c 1-150)" )
$PY -m medchallenge brats sample --out $W/brats --n-cases 12 --size 96 --slices 24 >/dev/null 2>&1
( cd $W/brats && $PY -m medchallenge brats tile --workers 4 >/dev/null 2>&1 && \
  $PY -m medchallenge brats train --model inputcascade --epochs 4 --patches-per-epoch 8192 --batch-size 128 --workers 4 \
    --out runs/p1 2>&1 | grep -E "epoch [0-9]+/[0-9]+: t" | cut -c 21-200 && \
  $PY -m medchallenge brats predict --checkpoint runs/p1/best.pt --out pred >/dev/null 2>&1 && \
  echo "brats gpu held-out: $($PY -m medchallenge brats evaluate --predictions pred --truth answers --json | cut -c 1-120)" )
