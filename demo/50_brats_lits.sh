#!/usr/bin/env bash
# BraTS (phase 1 → phase 2) then LiTS by transfer, on small synthetic volumes.
set -euo pipefail
ROOT="${1:-demo-out}"
OUT="$ROOT/brats"
rm -rf "$OUT" "$ROOT/lits"
echo "== BraTS: synthetic cases in $OUT"
medchallenge brats sample --out "$OUT" --n-cases 10
cd "$OUT"
medchallenge brats check --workers 2          # layout, headers, labels: exit 2 if tile would stop
medchallenge brats tile --workers 2 --cache patches
COMMON="--patches-per-epoch 512 --batch-size 64 --workers 0"
medchallenge brats train --model twopath --phase 1 --epochs 2 $COMMON --out runs/phase1
medchallenge brats train --phase 2 --from runs/phase1/best.pt --epochs 1 $COMMON --out runs/phase2
medchallenge brats predict --checkpoint runs/phase2/best.pt --out predictions
medchallenge brats evaluate --predictions predictions --truth answers --out evaluation
BRATS_RUN="$(pwd)/runs/phase2/best.pt"
cd - >/dev/null
echo "== LiTS: synthetic volumes in $ROOT/lits, transfer from $BRATS_RUN"
medchallenge lits sample --out "$ROOT/lits" --n-cases 8
cd "$ROOT/lits"
medchallenge lits tile --cache patches
medchallenge lits train --from "$BRATS_RUN" --transfer both --epochs 2 $COMMON --out runs/transfer
medchallenge lits predict --checkpoint runs/transfer/best.pt --out predictions
medchallenge lits evaluate --predictions predictions --truth answers --out evaluation
echo "BraTS/LiTS outputs: $OUT/{patches,runs,predictions} and $ROOT/lits/{patches,runs,predictions}"
