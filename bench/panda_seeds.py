"""Does PANDA's small setting learn every seed? Held-out QWK of the small configurations over seeds (CPU).

    nice -n 10 .venv/bin/python bench/panda_seeds.py                      # both configurations, seeds 0-4
    nice -n 10 .venv/bin/python bench/panda_seeds.py --configs new-user --seeds 0 1 --train-extra=--no-precise-bn

Configurations (issue 14):
- ``demo``: `make demo`'s (demo/10_panda.sh): 48 slides of 1024 px, 16 tiles of 32 px at level 1,
  resnet18 from scratch, 8 epochs, batch 8, lr 1e-3;
- ``new-user``: the issue's new-user run: 40 slides (sample's default 2048 px), 16 tiles of 64 px,
  resnet18 from scratch, 6 epochs, batch 4, lr 1e-3.

Each seed runs the real CLI: `panda sample --seed S` (the data differ per seed too), `tile`, `train
--seed S`, `predict` on the held-out test split (with the tuned cut-offs, and again with the fixed
ones), `evaluate`. Prints one JSON line per run, then per configuration the mean ± sd, the minimum
and the number of seeds at or below chance (QWK ≤ 0.2).
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

import pandas as pd

CONFIGS = {
    "demo": {"sample": ["--n-slides", "48", "--size", "1024"], "tile": ["--n-tiles", "16", "--tile-size", "32"],
             "train": ["--epochs", "8", "--batch-size", "8", "--lr", "1e-3"]},
    "new-user": {"sample": ["--n-slides", "40"], "tile": ["--n-tiles", "16", "--tile-size", "64"],
                 "train": ["--epochs", "6", "--batch-size", "4", "--lr", "1e-3"]},
}
FIXED = "0.5,1.5,2.5,3.5,4.5"
CHANCE = 0.2


def cli(*args: str) -> str:
    """Run ``medchallenge`` with ``args``; its stdout (stops the bench on a failure)."""
    result = subprocess.run([sys.executable, "-m", "medchallenge", *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"medchallenge {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def held_out(data: Path, run: Path, root: Path, name: str, extra: list[str]) -> tuple[float, float, list[int]]:
    """(QWK on the test split, predict seconds, predicted grades) of ``run``'s best.pt."""
    out = root / f"pred-{name}"
    start = time.perf_counter()
    cli("panda", "predict", "--checkpoint", str(run / "best.pt"), "--data", str(data), "--out", str(out),
        "--device", "cpu", "--workers", "0", *extra)
    seconds = time.perf_counter() - start
    scored = json.loads(cli("panda", "evaluate", "--predictions", str(out), "--truth",
                            str(data / "answers" / "test_labels.csv"), "--json", "--out", str(root / f"ev-{name}")))
    grades = pd.read_csv(out / "submission.csv")["isup_grade"].astype(int).tolist()
    return scored["score"], round(seconds, 2), grades


def one_run(config: str, seed: int, root: Path, train_extra: list[str]) -> dict:
    """sample → tile → train → predict → evaluate of one configuration and seed."""
    spec = CONFIGS[config]
    data, tiles, run = root / "data", root / "tiles", root / "run"
    cli("panda", "sample", "--out", str(data), "--seed", str(seed), *spec["sample"])
    cli("panda", "tile", "--data", str(data), "--cache", str(tiles), "--level", "1", "--workers", "0", *spec["tile"])
    start = time.perf_counter()
    cli("panda", "train", "--cache", str(tiles), "--out", str(run), "--model", "resnet18", "--no-pretrained",
        "--workers", "0", "--device", "cpu", "--seed", str(seed), *spec["train"], *train_extra)
    train_s = time.perf_counter() - start
    metrics = pd.read_csv(run / "metrics.csv")
    qwk, predict_s, grades = held_out(data, run, root, "auto", [])
    qwk_fixed, _, grades_fixed = held_out(data, run, root, "fixed", ["--threshold", FIXED])
    return {"config": config, "seed": seed, "train_extra": train_extra, "qwk": qwk, "qwk_fixed_cutoffs": qwk_fixed,
            "grades": grades, "grades_fixed": grades_fixed,
            "truth": pd.read_csv(data / "answers" / "test_labels.csv")["isup_grade"].astype(int).tolist(),
            "val_qwk_best": round(float(metrics["qwk"].max()), 4), "epochs": len(metrics), "train_s": round(train_s, 1), "predict_s": predict_s}


def summarise(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows if r[key] is not None]
    return {"mean": round(statistics.mean(values), 4) if values else None,
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "min": round(min(values), 4) if values else None,
            "at_or_below_chance": sum(v <= CHANCE for v in values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["demo", "new-user"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--train-extra", default="", help="Extra train options, space-separated (an ablation).")
    args = parser.parse_args()
    extra = args.train_extra.split()
    summary: dict = {}
    for config in args.configs:
        rows = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix=f"panda-seeds-{config}-") as tmp:
                rows.append(one_run(config, seed, Path(tmp), extra))
            print(json.dumps(rows[-1]), flush=True)
        summary[config] = {"qwk": summarise(rows, "qwk"), "qwk_fixed_cutoffs": summarise(rows, "qwk_fixed_cutoffs"),
                           "train_s": summarise(rows, "train_s")}
    print(json.dumps({"seeds": args.seeds, "train_extra": extra, "summary": summary}), flush=True)


if __name__ == "__main__":
    main()
