"""Held-out F1 of a small MIDOG configuration over several seeds: tuned threshold vs 0.5, TTA, cost.

    .venv/bin/python bench/midog_seeds.py --seeds 0 1 2 3 4                   # the demo's settings
    .venv/bin/python bench/midog_seeds.py --seeds 0 1 --size 1024 --patch-size 256 --epochs 3 \\
        --patches-per-image 4 --batch-size 8 --lr 1e-4                        # issue 14's run

For each seed: ``sample --seed`` (12 images), ``train`` (resnet18 from scratch, seeded), then
``predict`` on the held-out images with ``--threshold auto`` (the threshold tuned on validation),
``--threshold 0.5`` and, with ``--tta``, auto + the 8 dihedral views; each scored by ``evaluate``.
Prints one JSON object: per seed F1 / TP / FP / FN / tuned threshold / seconds, then mean ± sd.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [str(Path(sys.executable).parent / "medchallenge")]
THREADS = {"n": "1"}  # --threads: on a shared, oversubscribed machine 2 threads ran 10× slower than 1


def run(args: list[str], cwd: Path) -> str:
    """One CLI call; its stdout (a failed call stops the bench with its output)."""
    env = {**os.environ, "MEDCHALLENGE_PLAIN": "1", "OMP_NUM_THREADS": THREADS["n"], "MKL_NUM_THREADS": THREADS["n"]}
    done = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def score(folder: Path, run_dir: Path, test_ids: str, name: str, *predict_args: str) -> dict:
    """Predict the held-out images with ``predict_args`` and evaluate: F1, TP, FP, FN, seconds."""
    started = time.perf_counter()
    run(["midog", "predict", "--checkpoint", str(run_dir), "--cases", test_ids, "--out", f"pred-{name}",
         "--format", "points", "--device", "cpu", *predict_args], folder)
    seconds = time.perf_counter() - started
    metrics = json.loads(run(["midog", "evaluate", "--predictions", f"pred-{name}", "--truth", "answers/MIDOG.json",
                              "--out", f"eval-{name}", "--json"], folder))
    return {"f1": metrics["f1"], "tp": metrics["tp"], "fp": metrics["fp"], "fn": metrics["fn"],
            "predict_s": round(seconds, 1)}


def one_seed(seed: int, args: argparse.Namespace, root: Path) -> dict:
    folder = root / f"seed{seed}"
    run(["midog", "sample", "--out", str(folder), "--n-images", str(args.n_images), "--size", str(args.size),
         "--seed", str(seed)], root)
    started = time.perf_counter()
    run(["midog", "train", "--model", "resnet18", "--no-pretrained", "--patch-size", str(args.patch_size),
         "--patches-per-image", str(args.patches_per_image), "--batch-size", str(args.batch_size), "--epochs",
         str(args.epochs), "--lr", str(args.lr), "--workers", "0", "--device", "cpu", "--val-fraction", "0.25",
         "--seed", str(seed), "--out", "run"], folder)
    train_s = time.perf_counter() - started
    test_ids = ",".join(str(i["id"]) for i in json.loads((folder / "answers" / "MIDOG.json").read_text())["images"])
    import pandas as pd

    history = pd.read_csv(folder / "run" / "metrics.csv")
    best = history.loc[history["f1"].idxmax()]
    threshold = float(best["threshold"])
    result = {"seed": seed, "train_s": round(train_s, 1), "val_f1": float(best["f1"]), "tuned_threshold": threshold,
              "auto": score(folder, folder / "run", test_ids, "auto"),
              "at_0.5": score(folder, folder / "run", test_ids, "half", "--threshold", "0.5")}
    if args.tta:
        result["auto_tta"] = score(folder, folder / "run", test_ids, "tta", "--tta")
    return result


def summary(results: list[dict], key: str) -> dict:
    values = [r[key]["f1"] if r[key]["f1"] is not None else 0.0 for r in results if key in r]
    if not values:
        return {}
    return {"mean": round(statistics.mean(values), 4), "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "values": [round(v, 4) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--n-images", type=int, default=12)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--patches-per-image", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--tta", action="store_true", help="also predict with --tta (8× the detection time)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each CLI call")
    args = parser.parse_args()
    THREADS["n"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_seed(seed, args, Path(tmp)) for seed in args.seeds]
    print(json.dumps({"config": vars(args), "seeds": results,
                      "held_out_f1": {k: summary(results, k) for k in ("auto", "at_0.5", "auto_tta")}}, indent=1))


if __name__ == "__main__":
    main()
