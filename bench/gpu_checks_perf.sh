#!/usr/bin/env bash
# GPU checks for issue 15 (performance): the end-to-end train and predict tables of docs/performance.md
# and the issue's H100 targets. Run from the repository root on a CUDA machine.
#
# The device machines hold torch, torchvision, typer, rich, pandas, scikit-learn, matplotlib and
# tifffile but not efficientnet-pytorch, SimpleITK, openslide-python/openslide-bin or imagecodecs.
# Carry them as wheels in .whl/ (ignored by git), made here once:
#   echo /.whl/ >> .git/info/exclude
#   P="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#      --platform manylinux2014_x86_64 --only-binary=:all: --no-deps -d .whl"
#   python3 -m pip download $P simpleitk==2.5.7 imagecodecs openslide-bin==4.0.1.2 openslide-python==1.4.7
#   python3 -m pip download --no-deps --no-binary=:all: -d .whl efficientnet_pytorch==0.7.1   # an sdist (pure Python)
# then run this script with .whl carried (device tool: carry [".whl"]). One device call may last 10 minutes,
# so split it into calls made back to back (the machine stays warm 30 s; WORK keeps data and checkpoints):
#   CHALLENGES="panda kits"   SKIP=targets         WORK=/tmp/perf COMBINED=$OUT/perf_1.json bash bench/gpu_checks_perf.sh
#   CHALLENGES="brats lits"   SKIP=targets         WORK=/tmp/perf COMBINED=$OUT/perf_2.json bash bench/gpu_checks_perf.sh
#   CHALLENGES="midog lympho" SKIP=targets         WORK=/tmp/perf COMBINED=$OUT/perf_3.json bash bench/gpu_checks_perf.sh
#   SKIP="train predict"                           WORK=/tmp/perf COMBINED=$OUT/perf_4.json bash bench/gpu_checks_perf.sh
# Every result of a call is merged into one file, ${COMBINED:-$OUT/perf_gpu.json} (the device returns at most
# 8 files); the log (stdout) ends with one summary line per challenge.
# Env: PY (interpreter, default python3), SKIP (space-separated step names to skip: train predict targets),
# SCALE (default real), REPEATS (default 2), EPOCHS (default 3, the last reported), WORK (data kept there, else
# a temporary folder removed at the end), CHALLENGES (default all six), and for a dry run of every command on
# a CPU: DEVICE=cpu SCALE=small REPEATS=1 KITS_SLICES=24 KITS_SIZE=128 MIDOG_SIZE=768 THREADS=1.
set -uo pipefail
export MEDCHALLENGE_PLAIN=1 PYTHONUNBUFFERED=1
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
SCALE=${SCALE:-real}
REPEATS=${REPEATS:-2}
SKIP=${SKIP:-}
DEVICE=${DEVICE:-cuda}
CHALLENGES=${CHALLENGES:-panda kits brats lits midog lympho}
KITS_SLICES=${KITS_SLICES:-611}
KITS_SIZE=${KITS_SIZE:-512}
MIDOG_SIZE=${MIDOG_SIZE:-7215}
THREADS=${THREADS:+--threads $THREADS}
EPOCHS=${EPOCHS:-3}
RESULTS=$(mktemp -d)
COMBINED=${COMBINED:-${OUT:-/tmp}/perf_gpu.json}
if compgen -G ".whl/*" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/* || exit 1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if [ "$DEVICE" = cuda ]; then
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('gpu', torch.cuda.get_device_name(), 'torch', torch.__version__)" || exit 1
fi
W=${WORK:-$(mktemp -d)}
mkdir -p "$W"
uptime
skip() { [[ " $SKIP " == *" $1 "* ]]; }

# 1. end-to-end train, ours vs the seed's way, every challenge at the issue's sizes (data kept in $W for step 2).
#    Targets: PANDA efficientnet-b0 36×256 ratio >= 3 and ours >= 90 slides/s; data_wait_share < 0.05 in every ours run.
if ! skip train; then
  for c in $CHALLENGES; do
    $PY bench/train_e2e.py --challenge $c --device $DEVICE --scale $SCALE --repeats $REPEATS --work $W $THREADS \
      --epochs $EPOCHS --json-out "$RESULTS/train_$c.json" >/dev/null
  done
  # BraTS phase-1 InputCascadeCNN (65 px patches); its own data folder name is the same, so a second work dir
  [[ " $CHALLENGES " == *" brats "* ]] && $PY bench/train_e2e.py --challenge brats --device $DEVICE --scale $SCALE --repeats $REPEATS --brats-model inputcascade \
    --work $W/inputcascade $THREADS --epochs $EPOCHS --json-out "$RESULTS/train_brats_inputcascade.json" >/dev/null
fi

# 2. end-to-end predict, ours vs the seed's way (fp32, the report's batch, per-patch loops), on the data of step 1
if ! skip predict; then
  for c in $CHALLENGES; do
    $PY bench/predict_e2e.py --challenge $c --device $DEVICE --scale $SCALE --repeats $REPEATS --work $W $THREADS \
      --json-out "$RESULTS/predict_$c.json" >/dev/null
  done
fi

# 3. the issue's predict targets: KiTS 611×512×512 < 5 s; MIDOG 7215×5412 < 1.5 s with NMS < 5 %; BraTS 240×240×155 < 2 s
if ! skip targets; then
  $PY bench/predict_e2e.py --challenge kits --device $DEVICE --scale $SCALE --repeats $REPEATS --work $W $THREADS \
    --kits-slices $KITS_SLICES --kits-size $KITS_SIZE --json-out "$RESULTS/target_kits_$KITS_SLICES.json" >/dev/null
  $PY bench/predict_e2e.py --challenge midog --device $DEVICE --scale $SCALE --repeats $REPEATS --work $W $THREADS \
    --midog-size $MIDOG_SIZE --json-out "$RESULTS/target_midog_$MIDOG_SIZE.json" >/dev/null
  # the model alone on the whole image (batched vs one patch at a time), and NMS of 2k/20k points (KD-tree vs loop)
  $PY bench/midog_inference.py --device $DEVICE --backbone resnet50 --batch-size 16 --width $MIDOG_SIZE \
    --height $(( MIDOG_SIZE * 3 / 4 )) > "$RESULTS/midog_inference.txt" 2>&1
  $PY bench/midog_nms.py > "$RESULTS/midog_nms.txt" 2>&1
fi
uptime
tail -n 4 "$RESULTS"/*.txt 2>/dev/null
# one summary line per result: ours vs seed and the targets
$PY - "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    try:
        data = json.loads(path.read_text())
    except ValueError:
        print(path.name, "unreadable"); continue
    for name, entry in data.get("challenges", {}).items():
        if "error" in entry:
            print(path.name, name, "ERROR", entry["error"][:300]); continue
        if data.get("bench") == "train_e2e":
            o, s = entry["ours"], entry["seed"]
            print(f"{path.name} {name}: ours {o.get('items_per_s')} {entry['unit']}/s wait {o.get('data_wait_share')} "
                  f"gpu {o.get('peak_gpu_mem_gb')} GB | seed {s.get('items_per_s')} wait {s.get('data_wait_share')} "
                  f"| ratio {entry['ratio_items_per_s']}")
        else:
            o = entry["ours"]
            extra = f" nms_share {o['nms_share']:.3f}" if "nms_share" in o else ""
            print(f"{path.name} {name}: ours {o['s_per_item']:.3f} s/{o['unit'][:-1]}{extra} | seed cli "
                  f"{entry['seed_cli']['s_per_item']:.3f} | per-patch {entry.get('seed_per_patch', {}).get('s_per_item')}")
EOF
$PY -c "import json,sys,pathlib; d={p.name: (json.loads(p.read_text()) if p.suffix == '.json' else p.read_text())
for p in sorted(pathlib.Path(sys.argv[1]).iterdir())}; pathlib.Path(sys.argv[2]).write_text(json.dumps(d, indent=1))" \
  "$RESULTS" "$COMBINED" && echo "all results: $COMBINED"
[ -n "${WORK:-}" ] || rm -rf "$W"
rm -rf "$RESULTS"
