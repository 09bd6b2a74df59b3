"""LiTS on synthetic data: one fold model vs the 3-fold ensemble vs the ensemble with --tta.

    .venv/bin/python bench/lits_ensemble.py --seeds 0 1 2 --epochs 2 --patches 512

For each seed: ``lits sample`` (the seed draws the data and the split), ``tile``, three
``train --n-folds 3 --fold K --transfer none`` runs, ``cv``, then ``predict`` on the held-out
test volumes with fold 0 alone, with the three folds (``--checkpoint cv``) and with the three
folds mirrored (``--tta``), each scored by ``evaluate``. Prints one JSON object: per mode the
mean ± sd over seeds of the held-out Dice numbers and of the predict time, plus the pooled
out-of-fold (cv) score.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from medchallenge.cli import app

KEYS = ("tumor_dice_per_case", "liver_dice_per_case", "liver_dice_global")


def _run(*args: Any) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(f"{args}: {result.output}")
    return result.stdout


def _json(*args: Any) -> dict[str, Any]:
    return json.loads(_run(*args, "--json").strip().splitlines()[-1])


def one_seed(root: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train the folds of one seed and score the three ways of predicting the test volumes."""
    _run("lits", "sample", "--out", root, "--n-cases", args.cases, "--size", args.size, "--n-slices", args.slices,
         "--seed", seed)
    _run("lits", "tile", "--data", root, "--cache", root / "patches")
    runs = []
    for fold in range(3):
        run = root / f"fold{fold}"
        _run("lits", "train", "--cache", root / "patches", "--out", run, "--transfer", "none", "--n-folds", 3,
             "--fold", fold, "--seed", seed, "--epochs", args.epochs, "--patches-per-epoch", args.patches,
             "--batch-size", 64, "--device", args.device, "--workers", 0)
        runs.append(run)
    out: dict[str, Any] = {"cv": _json("lits", "cv", *runs, "--out", root / "cv")["score"]}
    for mode, extra in (("single", ["--checkpoint", runs[0]]), ("ensemble3", ["--checkpoint", root / "cv"]),
                        ("ensemble3_tta", ["--checkpoint", root / "cv", "--tta"])):
        started = time.perf_counter()
        _run("lits", "predict", "--data", root, "--out", root / mode, "--device", args.device, *extra)
        seconds = time.perf_counter() - started
        metrics = _json("lits", "evaluate", "--predictions", root / mode, "--truth", root / "answers",
                        "--out", root / f"eval-{mode}")
        out[mode] = {**{k: metrics[k] for k in KEYS}, "predict_s": round(seconds, 2)}
    return out


def _mean_sd(values: list[float | None]) -> list[float | None]:
    kept = [v for v in values if v is not None]
    if not kept:
        return [None, None]
    return [round(statistics.mean(kept), 4), round(statistics.stdev(kept), 4) if len(kept) > 1 else None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patches", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("MEDCHALLENGE_PLAIN", "1")
    per_seed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            per_seed[seed] = one_seed(Path(tmp) / f"seed{seed}", seed, args)
    summary: dict[str, Any] = {"cv_tumor_dice_per_case": _mean_sd([r["cv"] for r in per_seed.values()])}
    for mode in ("single", "ensemble3", "ensemble3_tta"):
        summary[mode] = {k: _mean_sd([r[mode][k] for r in per_seed.values()]) for k in (*KEYS, "predict_s")}
    print(json.dumps({"bench": "lits_ensemble", "settings": vars(args), "mean_sd_over_seeds": summary,
                      "per_seed": per_seed}))


if __name__ == "__main__":
    main()
