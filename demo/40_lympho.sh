#!/usr/bin/env bash
# Lymphocytosis on small synthetic data: sample → tile → train (mean, moe) → predict → evaluate.
set -euo pipefail
OUT="${1:-demo-out}/lympho"
rm -rf "$OUT"
echo "== Lymphocytosis: synthetic patients in $OUT"
medchallenge lympho sample --out "$OUT" --n-patients 32 --min-images 6 --max-images 12
cd "$OUT"
medchallenge lympho tile --crop 64
for model in mean moe; do
  medchallenge lympho train --model "$model" --no-pretrained --epochs 4 --lr 1e-3 --val-fraction 0.4 --workers 0 \
    --out "runs/$model"
  medchallenge lympho predict --checkpoint "runs/$model/best.pt" --out "submission_$model.csv" --scores
  medchallenge lympho evaluate --predictions "submission_$model.csv" --truth answers/test_labels.csv
done
echo "Lymphocytosis outputs: $OUT/{cache,runs,submission_mean.csv,submission_moe.csv}"
