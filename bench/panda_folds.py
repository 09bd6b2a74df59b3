"""Held-out QWK of one model vs the 3-fold ensemble vs the ensemble with TTA, over seeds (synthetic data).

    .venv/bin/python bench/panda_folds.py --seeds 0 1 2                       # CPU, the e2e test's small setting
    .venv/bin/python bench/panda_folds.py --device cuda --tiles 36 --tile-size 256 --size 4096 \
        --model efficientnet-b0 --epochs 10 --batch-size 4 --seeds 0 1 2   # the GPU setting of issue 14

For each seed: `panda sample` (that seed), `tile`, one model trained on a --val-fraction split,
three fold models (--n-folds 3), `cv` (pooled out-of-fold QWK), then `predict` on the held-out test
split by the single model, the 3-fold ensemble and the ensemble with --tta, each scored by
`evaluate`. Prints one JSON object per seed, then the mean ± sd of each column and the predict
times (the cost of ensembles and TTA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(*args: str) -> str:
    """Run ``medchallenge`` with ``args``; its stdout (stops the bench on a failure)."""
    result = subprocess.run([sys.executable, "-m", "medchallenge", *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"medchallenge {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def one_seed(args: argparse.Namespace, seed: int, root: Path) -> dict:
    data, tiles = root / "data", root / "tiles"
    cli("panda", "sample", "--out", str(data), "--n-slides", str(args.slides), "--size", str(args.size),
        "--seed", str(seed))
    cli("panda", "tile", "--data", str(data), "--cache", str(tiles), "--level", "1", "--n-tiles", str(args.tiles),
        "--tile-size", str(args.tile_size), "--workers", str(args.workers))
    train = ["panda", "train", "--cache", str(tiles), "--model", args.model, "--no-pretrained", "--epochs",
             str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--device", args.device,
             "--workers", str(args.workers), "--seed", str(seed)]
    cli(*train, "--out", str(root / "single"))
    folds = [root / f"fold{k}" for k in range(3)]
    for k, run in enumerate(folds):
        cli(*train, "--n-folds", "3", "--fold", str(k), "--out", str(run))
    pooled = json.loads(cli("panda", "cv", *map(str, folds), "--out", str(root / "cv"), "--json"))
    row: dict = {"seed": seed, "cv_qwk": pooled["score"], "cv_qwk_fixed": pooled["qwk_fixed_cutoffs"]}
    answers = data / "answers" / "test_labels.csv"
    for name, extra in (("single", ["--checkpoint", str(root / "single")]),
                        ("ensemble", ["--checkpoint", str(root / "cv")]),
                        ("ensemble_tta", ["--checkpoint", str(root / "cv"), "--tta"])):
        out = root / f"pred-{name}"
        start = time.perf_counter()
        cli("panda", "predict", *extra, "--data", str(data), "--out", str(out), "--device", args.device,
            "--workers", str(args.workers))
        row[f"{name}_predict_s"] = round(time.perf_counter() - start, 2)
        scored = json.loads(cli("panda", "evaluate", "--predictions", str(out), "--truth", str(answers), "--json",
                                "--out", str(root / f"ev-{name}")))
        row[f"{name}_qwk"] = scored["score"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--slides", type=int, default=48)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--tile-size", type=int, default=32)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_seed(args, seed, Path(tmp)))
        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for key in rows[0]:
        if key == "seed":
            continue
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = {"mean": round(statistics.mean(values), 4) if values else None,
                        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}
    print(json.dumps({"config": vars(args), "summary": summary}))


if __name__ == "__main__":
    main()
