#!/usr/bin/env bash
# PANDA on a CPU-sized synthetic dataset: sample → tile → train → predict → evaluate.
set -euo pipefail
OUT="${1:-demo-out}/panda"
rm -rf "$OUT"
echo "== PANDA: synthetic slides in $OUT"
medchallenge panda sample --out "$OUT" --n-slides 48 --size 1024 --seed 0
cd "$OUT"
medchallenge panda tile --level 1 --n-tiles 16 --tile-size 32 --workers 2
medchallenge panda train --model resnet18 --no-pretrained --epochs 8 --batch-size 8 --lr 1e-3 --workers 0 --out runs/demo
medchallenge panda predict --checkpoint runs/demo/best.pt --out predictions --tta
medchallenge panda evaluate --predictions predictions --truth answers/test_labels.csv --out evaluation
echo "PANDA outputs: $OUT/{tiles,runs/demo,predictions/submission.csv,evaluation}"
