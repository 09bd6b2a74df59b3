#!/usr/bin/env bash
# MIDOG 2021 on a few small synthetic images: sample → tile → train → predict → evaluate.
set -euo pipefail
OUT="${1:-demo-out}/midog"
rm -rf "$OUT"
echo "== MIDOG: synthetic images in $OUT"
medchallenge midog sample --out "$OUT" --n-images 12 --size 512
cd "$OUT"
# MIDOG.json and the TIFF headers, nothing decoded: counts per scanner, sizes, problems
medchallenge midog check --data .
# tiled TIFF copies (with MIDOG.json) in ./tiles: train reads patches from them
medchallenge midog tile --cache tiles
medchallenge midog train --cache tiles --model resnet18 --no-pretrained --patch-size 96 --patches-per-image 12 \
  --batch-size 8 --epochs 4 --lr 3e-4 --workers 0 --val-fraction 0.25 --out runs/demo
TEST_IDS=$(python3 -c "import json; print(','.join(str(i['id']) for i in json.load(open('answers/MIDOG.json'))['images']))")
# two parts, as an array job would run them: predictions/detections.part-K-of-2.json (px) and
# predictions/grand-challenge.part-K-of-2.json (the reference container's documents, mm)
for PART in 1/2 2/2; do
  medchallenge midog predict --checkpoint runs/demo/best.pt --cases "$TEST_IDS" --threshold auto --out predictions \
    --part "$PART"
done
medchallenge midog evaluate --predictions predictions --truth answers/MIDOG.json --out evaluation
# the grand-challenge file of one whole run, scored from millimetres (each TIFF's 0.25 µm/px)
medchallenge midog predict --checkpoint runs/demo/best.pt --cases "$TEST_IDS" --threshold auto --format grand-challenge \
  --out submission-gc
medchallenge midog evaluate --predictions submission-gc/grand-challenge.json --truth answers/MIDOG.json --data . \
  --out evaluation-gc
echo "MIDOG outputs: $OUT/{tiles,runs/demo,predictions,evaluation,submission-gc,evaluation-gc}"
