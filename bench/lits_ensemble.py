"""LiTS on synthetic data: the demo's single model (± --tta) vs the 3-fold ensemble vs the ensemble with --tta.

    .venv/bin/python bench/lits_ensemble.py --seeds 0 1 2 --single-seeds 3 4 --from BRATS/best.pt

For each seed: ``lits sample`` (the seed draws the data and the split), ``tile``, the demo's
``train`` (2 epochs of 512 patches, batch 64, ``--transfer both --from`` a BraTS checkpoint, or
``--transfer none`` without ``--from``) on the default split, predicted as is and with ``--tta``;
for the seeds of ``--seeds`` also three ``train --n-folds 3 --fold K`` runs, ``cv``, and
``predict`` with the three folds (``--checkpoint cv``) and the three folds mirrored (``--tta``).
Each prediction of the held-out test volumes is scored by ``evaluate``. Prints one JSON object:
per mode the mean ± sd over seeds of the held-out Dice numbers and of the predict time, plus the
pooled out-of-fold (cv) score. ``single`` over ``--seeds`` + ``--single-seeds`` is the seed table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
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


def _train(root: Path, run: Path, seed: int, args: argparse.Namespace, *fold: Any) -> Path:
    source = ["--from", args.source, "--transfer", "both"] if args.source else ["--transfer", "none"]
    _run("lits", "train", "--cache", root / "patches", "--out", run, *source, *fold, "--seed", seed,
         "--epochs", args.epochs, "--patches-per-epoch", args.patches, "--batch-size", 64, "--device", args.device,
         "--workers", 0)
    return run


def _held_out(root: Path, mode: str, args: argparse.Namespace, *extra: Any) -> dict[str, Any]:
    started = time.perf_counter()
    _run("lits", "predict", "--data", root, "--out", root / mode, "--device", args.device, *extra)
    seconds = time.perf_counter() - started
    metrics = _json("lits", "evaluate", "--predictions", root / mode, "--truth", root / "answers",
                    "--out", root / f"eval-{mode}")
    return {**{k: metrics[k] for k in KEYS}, "predict_s": round(seconds, 2)}


def one_seed(root: Path, seed: int, args: argparse.Namespace, folds: bool) -> dict[str, Any]:
    """The single model (and with folds, the fold ensemble) of one seed, scored the ways of predicting."""
    _run("lits", "sample", "--out", root, "--n-cases", args.cases, "--size", args.size, "--n-slices", args.slices,
         "--seed", seed)
    _run("lits", "tile", "--data", root, "--cache", root / "patches")
    single = _train(root, root / "single", seed, args)
    out: dict[str, Any] = {"single": _held_out(root, "single", args, "--checkpoint", single),
                           "single_tta": _held_out(root, "single_tta", args, "--checkpoint", single, "--tta")}
    if not folds:
        return out
    runs = [_train(root, root / f"fold{k}", seed, args, "--n-folds", 3, "--fold", k) for k in range(3)]
    out["cv"] = _json("lits", "cv", *runs, "--out", root / "cv")["score"]
    out["ensemble3"] = _held_out(root, "ensemble3", args, "--checkpoint", root / "cv")
    out["ensemble3_tta"] = _held_out(root, "ensemble3_tta", args, "--checkpoint", root / "cv", "--tta")
    return out


def _mean_sd(values: list[float | None]) -> list[float | None]:
    kept = [v for v in values if v is not None]
    if not kept:
        return [None, None]
    return [round(statistics.mean(kept), 4), round(statistics.stdev(kept), 4) if len(kept) > 1 else None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds with the 3 folds")
    parser.add_argument("--single-seeds", type=int, nargs="*", default=[], help="seeds of the single model only")
    parser.add_argument("--from", dest="source", default=None, help="BraTS checkpoint (--transfer both)")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patches", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("MEDCHALLENGE_PLAIN", "1")
    per_seed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [*args.single_seeds, *args.seeds]:  # the cheap single-model seeds first
            per_seed[seed] = one_seed(Path(tmp) / f"seed{seed}", seed, args, folds=seed in args.seeds)
            print(json.dumps({"seed": seed, **per_seed[seed]}), file=sys.stderr, flush=True)  # progress
    summary: dict[str, Any] = {"cv_tumor_dice_per_case": _mean_sd([r["cv"] for r in per_seed.values() if "cv" in r])}
    for mode in ("single", "single_tta", "ensemble3", "ensemble3_tta"):
        rows = [r[mode] for r in per_seed.values() if mode in r]
        summary[mode] = {"n_seeds": len(rows), **{k: _mean_sd([r[k] for r in rows]) for k in (*KEYS, "predict_s")}}
    print(json.dumps({"bench": "lits_ensemble", "settings": vars(args), "mean_sd_over_seeds": summary,
                      "per_seed": per_seed}))


if __name__ == "__main__":
    main()
