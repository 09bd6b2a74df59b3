#!/usr/bin/env bash
# KiTS19 on small synthetic CT cases: sample → tile → train → predict → evaluate.
set -euo pipefail
OUT="${1:-demo-out}/kits"
rm -rf "$OUT"
echo "== KiTS19: synthetic cases in $OUT"
medchallenge kits sample --out "$OUT" --n-cases 12 --size 96
cd "$OUT"
medchallenge kits check --workers 2
medchallenge kits tile --workers 2
medchallenge kits train --epochs 16 --batch-size 8 --lr 0.002 --patch-size 96 --depth 3 --width 16 --batch-norm \
  --loss dice-ce --oversample 0.5 --workers 0 --out runs/demo
medchallenge kits predict --checkpoint runs/demo/best.pt --cases 210-212 --out predictions
medchallenge kits evaluate --predictions predictions --truth answers --plots --out evaluation
echo "KiTS outputs: $OUT/{slices,runs/demo,predictions,evaluation}"
