#!/usr/bin/env bash
# MIDOG 2021 on a few small synthetic images: sample → train → predict → evaluate.
# (tile re-encodes strip TIFFs as tiled ones; the synthetic images are tiled already, so the demo skips it.)
set -euo pipefail
OUT="${1:-demo-out}/midog"
rm -rf "$OUT"
echo "== MIDOG: synthetic images in $OUT"
medchallenge midog sample --out "$OUT" --n-images 12 --width 512 --height 384
cd "$OUT"
medchallenge midog train --backbone resnet18 --no-pretrained --patch-size 96 --patches-per-image 12 --batch-size 8 \
  --epochs 4 --lr 1e-3 --workers 0 --val-fraction 0.25 --out runs/demo
TEST_IDS=$(python3 -c "import json; print(','.join(str(i['id']) for i in json.load(open('answers/MIDOG.json'))['images']))")
medchallenge midog predict --checkpoint runs/demo/best.pt --ids "$TEST_IDS" --threshold auto --out detections.json
medchallenge midog evaluate --detections detections.json --truth answers/MIDOG.json
# the same detections as the reference container writes them (millimetres, from each TIFF's 0.25 µm/px)
medchallenge midog predict --checkpoint runs/demo/best.pt --ids "$TEST_IDS" --threshold auto --format grand-challenge \
  --out submission-gc/detections.json
medchallenge midog evaluate --detections submission-gc/detections.json --truth answers/MIDOG.json --data .
echo "MIDOG outputs: $OUT/{runs/demo,detections.json,evaluation,submission-gc}"
