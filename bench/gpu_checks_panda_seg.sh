#!/usr/bin/env bash
# GPU checks for PANDA segmentation and the mask-guided classifier (issue 3): CUDA tests, memory and
# throughput of the 4-channel classifier (36 tiles × 256 px) and of the U-Net, the backbone table.
# Run from the repository root on a CUDA machine with the package importable (PYTHONPATH=.).
set -uo pipefail
export MEDCHALLENGE_PLAIN=1
PY=${PY:-python3}
$PY -m pytest -q -p no:cacheprovider -W ignore -s tests/panda/test_panda_gpu.py tests/panda/test_panda_segment.py 2>&1 \
  | grep -E "passed|failed|error|gpu " | tail -5
for bs in 4 8; do
  $PY bench/panda_train.py --device cuda --channels 4 --batch-size $bs --grad-checkpoint both --steps 8
done
$PY bench/panda_train.py --device cuda --channels 4 --batch-size 16 --grad-checkpoint on --steps 8
$PY bench/panda_train.py --device cuda --channels 4 --batch-size 4 --no-channels-last --steps 8
$PY bench/panda_train.py --device cuda --model unet --batch-size 1 --steps 8
$PY bench/panda_train.py --device cuda --model unet --batch-size 2 --steps 8
$PY bench/panda_backbones.py --device cuda --out ${BACKBONES_OUT:-/tmp/backbones} --epochs ${BACKBONE_EPOCHS:-12} \
  --batch-size 8 --lr 3e-4 --workers 4 --n-slides 60 --slide-size 2048 --n-tiles 16 --tile-size 64 2>&1 | grep -v "^20"
