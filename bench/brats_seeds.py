"""The demo's small BraTS configuration over several seeds: single model vs 3-fold ensemble vs + TTA.

    .venv/bin/python bench/brats_seeds.py --seeds 5 --device cpu --work /tmp/brats-seeds
    .venv/bin/python bench/brats_seeds.py --seeds 5 --no-folds --skip-cost     # the 5-seed table only

Per seed: ``brats sample --seed S`` (10 cases, 7 labelled, 3 held out), ``tile``, then the demo's
training (phase 1: 2 epochs of 512 patches, phase 2: 1 epoch, batch 64) once on the default split
and once per fold of ``--n-folds 3`` (``--seed S``); held-out score (mean of WT/TC/ET Dice, as
``evaluate``) of the single model, the single model with ``--tta``, the 3-fold ensemble, the
ensemble with ``--tta``, and the ``cv`` score of the folds. Then the cost of TTA and ensembles on
one full-size volume (4×155×240×240 by default, random weights: timing only). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medchallenge.cli import app

COMMON = ["--patches-per-epoch", "512", "--batch-size", "64", "--workers", "0"]


def cli(*args: str) -> None:
    app(list(args), standalone_mode=False)


def train(cache: Path, out: Path, seed: int, device: str, folds: list[str]) -> Path:
    """Phase 1 (2 epochs) then phase 2 (1 epoch) as the demo; returns phase 2's best.pt."""
    common = [*COMMON, "--device", device, "--seed", str(seed), *folds]
    cli("brats", "train", "--cache", str(cache), "--out", str(out / "p1"), "--epochs", "2", *common)
    cli("brats", "train", "--cache", str(cache), "--out", str(out / "p2"), "--phase", "2", "--from",
        str(out / "p1" / "best.pt"), "--epochs", "1", *common)
    return out / "p2" / "best.pt"


def held_out(root: Path, name: str, checkpoints: list[Path], device: str, tta: bool) -> tuple[float, float]:
    """(score on the held-out answers, predict seconds)."""
    from medchallenge.brats.predict import evaluate_brats

    test = root / "held-out"  # only the held-out cases (links): predict would also segment the training cases
    if not test.exists():
        test.mkdir()
        for case in (root / "answers").iterdir():
            (test / case.name).symlink_to(root / case.name, target_is_directory=True)
    args = ["brats", "predict", "--data", str(test), "--out", str(root / f"pred-{name}"), "--device", device]
    for c in checkpoints:
        args += ["--checkpoint", str(c)]
    start = time.perf_counter()
    cli(*args, *(["--tta"] if tta else []))
    seconds = time.perf_counter() - start
    return evaluate_brats(root / f"pred-{name}", root / "answers").score, seconds


def one_seed(work: Path, seed: int, device: str, folds: bool = True) -> dict[str, Any]:
    from medchallenge.brats.metrics import cv_score
    from medchallenge.core.cv import cross_validate

    root = work / f"seed{seed}"
    cli("brats", "sample", "--out", str(root), "--n-cases", "10", "--seed", str(seed))
    cli("brats", "tile", "--data", str(root), "--cache", str(root / "patches"))
    single = train(root / "patches", root / "single", seed, device, [])
    row: dict[str, Any] = {"seed": seed}
    for name, tta in (("single", False), ("single_tta", True)):
        row[name], row[f"{name}_predict_s"] = held_out(root, name, [single], device, tta)
    if not folds:
        return row
    fold_ckpts = [train(root / "patches", root / f"fold{k}", seed, device, ["--n-folds", "3", "--fold", str(k)])
                  for k in range(3)]
    for name, tta in (("ensemble3", False), ("ensemble3_tta", True)):
        row[name], row[f"{name}_predict_s"] = held_out(root, name, fold_ckpts, device, tta)
    row["cv_pooled"] = cross_validate([c.parent for c in fold_ckpts], "brats", cv_score).score
    return row


def cost(device_name: str, size: int, slices: int, repeats: int = 1) -> dict[str, float]:
    """Seconds for one volume: 1 model, 1 model + TTA, 3 models, 3 models + TTA (random TwoPathCNNs)."""
    from medchallenge.core.device import amp_dtype, resolve_device
    from medchallenge.havaei.inference import segment_slices
    from medchallenge.havaei.models import TwoPathCNN

    device = resolve_device(device_name)
    models = [TwoPathCNN().to(device).eval() for _ in range(3)]
    images = np.random.default_rng(0).normal(size=(4, slices, size, size)).astype(np.float32)
    out: dict[str, float] = {}
    for name, members, flips in (("model1", models[:1], False), ("model1_tta", models[:1], True),
                                 ("model3", models, False), ("model3_tta", models, True)):
        segment_slices(members, images[:, :2], device, 8, amp_dtype(device), [0, 1, 2, 4], flips=flips)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            segment_slices(members, images, device, 8, amp_dtype(device), [0, 1, 2, 4], flips=flips)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        out[f"{name}_s"] = round(best, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--no-folds", action="store_true", help="single model (and --tta) only: no 3-fold ensemble")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=Path("brats-seeds"))
    parser.add_argument("--cost-size", type=int, default=240)
    parser.add_argument("--cost-slices", type=int, default=155)
    parser.add_argument("--skip-seeds", action="store_true", help="only the cost of TTA and ensembles")
    parser.add_argument("--skip-cost", action="store_true", help="no full-size timing")
    args = parser.parse_args()
    result: dict[str, Any] = {"device": args.device, "torch": torch.__version__}
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
    if not args.skip_seeds:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        rows = []
        for seed in seeds:
            rows.append(one_seed(args.work, seed, args.device, not args.no_folds))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: a seed's row as it ends
        result["seeds"] = rows
        for key in ("single", "single_tta", "ensemble3", "ensemble3_tta", "cv_pooled"):
            values = [r[key] for r in rows if key in r]
            if not values:
                continue
            result[key] = {"mean": round(statistics.mean(values), 4),
                           "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None}
    if not args.skip_cost:
        result["cost_one_volume"] = {"shape": [4, args.cost_slices, args.cost_size, args.cost_size],
                                     **cost(args.device, args.cost_size, args.cost_slices)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
