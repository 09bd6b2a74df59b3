#!/usr/bin/env bash
# PANDA tile segmentation and the mask-guided classifier on a CPU-sized synthetic dataset:
# sample → tile (with masks) → train U-Net → predict masks + overlays → evaluate Dice →
# train the RGB + mask classifier on predicted masks → predict with the U-Net → evaluate QWK.
set -euo pipefail
OUT="${1:-demo-out}/panda-seg"
rm -rf "$OUT"
echo "== PANDA segmentation: synthetic slides in $OUT"
medchallenge panda sample --out "$OUT" --n-slides 48 --size 1024 --seed 0
cd "$OUT"
medchallenge panda tile --level 1 --n-tiles 16 --tile-size 32 --workers 2
medchallenge panda train --model unet --width 8 --depth 2 --epochs 6 --batch-size 4 --lr 2e-3 \
  --workers 0 --out runs/unet
medchallenge panda predict --checkpoint runs/unet/best.pt --cache tiles --out pred_masks --n-overlays 4
medchallenge panda evaluate --masks pred_masks --truth tiles --out evaluation-masks
medchallenge panda train --mask-model runs/unet/best.pt --model resnet18 --no-pretrained --epochs 8 --batch-size 4 \
  --lr 1e-3 --workers 0 --out runs/masked
medchallenge panda predict --checkpoint runs/masked/best.pt --mask-model runs/unet/best.pt --out predictions
medchallenge panda evaluate --predictions predictions --truth answers/test_labels.csv --out evaluation
echo "PANDA segmentation outputs: $OUT/{runs/unet,pred_masks/overlays,runs/masked,predictions/submission.csv,evaluation}"
