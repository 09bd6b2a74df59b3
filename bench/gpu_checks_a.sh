#!/usr/bin/env bash
# GPU checks, part A (PANDA, MIDOG, lymphocytosis, engine): CUDA tests, benchmarks, short GPU runs.
# Run from the repository root on a CUDA machine with the package importable (PYTHONPATH=.).
set -uo pipefail
export MEDCHALLENGE_PLAIN=1
PY=${PY:-python3}
W=$(mktemp -d)
$PY -m pytest -q -p no:cacheprovider -W ignore tests/core/test_engine_gpu.py tests/panda/test_panda_gpu.py 2>&1 | tail -3
$PY bench/panda_train.py --device cuda --sweep --batch-size 4
$PY bench/panda_train.py --device cuda --sweep --batch-size 4 --channels 4
$PY bench/midog_inference.py --device cuda --backbone resnet50 --batch-size 16
$PY bench/lympho_features.py --device cuda --images 200 --crop 112
# MIDOG on the GPU: the model (ResNet50-FPN v2), from scratch, a few minutes
$PY -m medchallenge midog sample --out $W/midog --n-images 24 --width 1536 --height 1024 >/dev/null 2>&1
( cd $W/midog && $PY -m medchallenge midog train --no-pretrained --patch-size 256 --batch-size 16 --epochs 12 \
    --patches-per-image 16 --lr 3e-4 --workers 4 --out runs/r50 2>&1 | grep -E "epoch [0-9]+/[0-9]+: t" | cut -c 21-170
  IDS=$($PY -c "import json;print(','.join(str(i['id']) for i in json.load(open('answers/MIDOG.json'))['images']))")
  $PY -m medchallenge midog predict --checkpoint runs/r50/best.pt --ids $IDS --threshold auto --out det.json >/dev/null 2>&1
  echo "midog gpu held-out: $($PY -m medchallenge midog evaluate --detections det.json --truth answers/MIDOG.json --json)" )
# lymphocytosis on the GPU, real crop size
$PY -m medchallenge lympho sample --out $W/ly --n-patients 48 >/dev/null 2>&1
( cd $W/ly && $PY -m medchallenge lympho tile --crop 112 >/dev/null 2>&1 && \
  $PY -m medchallenge lympho train --model attention --no-pretrained --epochs 6 --lr 1e-3 --workers 4 --out runs/a \
    --channels-last 2>&1 | grep -E "epoch [0-9]+/[0-9]+: t" | cut -c 21-170 && \
  $PY -m medchallenge lympho predict --checkpoint runs/a/best.pt --out s.csv >/dev/null 2>&1 && \
  echo "lympho gpu held-out: $($PY -m medchallenge lympho evaluate --predictions s.csv --truth answers/test_labels.csv --json)" )
