#!/usr/bin/env bash
# Lymphocytosis on small synthetic data: sample → check → tile → train (mean, moe) → predict → evaluate.
set -euo pipefail
OUT="${1:-demo-out}/lympho"
rm -rf "$OUT"
echo "== Lymphocytosis: synthetic patients in $OUT"
medchallenge lympho sample --out "$OUT" --n-patients 32 --min-bag 6 --max-bag 12
cd "$OUT"
medchallenge lympho check
medchallenge lympho tile --crop 64 --cache cache
for model in mean moe; do
  medchallenge lympho train --cache cache --model "$model" --no-pretrained --epochs 4 --lr 1e-3 --val-fraction 0.4 --workers 0 \
    --out "runs/$model"
  medchallenge lympho predict --checkpoint "runs/$model" --out "predictions_$model" --scores
  medchallenge lympho evaluate --predictions "predictions_$model" --truth answers/test_labels.csv \
    --out "evaluation_$model" --plots
done
echo "Lymphocytosis outputs: $OUT/{cache,runs,predictions_*/submission.csv,evaluation_*}"
