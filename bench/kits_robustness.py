"""KiTS results that hold up (issue 14): seeds, single model vs fold ensemble vs ensemble + TTA.

For each seed, on the project's own ``sample`` data with the small settings of ``make demo``
(demo/20_kits.sh), through the CLI exactly as a user runs it, every score the held-out composite
Dice of the 3 test cases (official KiTS19 rule: per case the mean of kidney and tumour Dice):

- ``single``: one model on the default split (``--val-fraction 0.2``); ``single_tta``: it with ``--tta``;
- ``cv_oof``: ``--n-folds 3``, the pooled out-of-fold score (``kits cv``, validation cases, not held out);
- ``fold0``..``fold2``: each fold model alone on the held-out cases (how strong the members are);
- ``ensemble``: the three fold models averaged (``predict --checkpoint CV``); ``ensemble_tta``: with ``--tta``.

Per run it records the training/validation case counts (split.json) and best.pt's epoch; per
variant the CLI predict time. ``--cost`` times the forwards alone, in process, on the held-out
slices of the first seed (single, single + TTA, 3-model ensemble, ensemble + TTA): the cost of
ensembles and TTA without the CLI's start-up. Prints one JSON object; ``--out FILE`` also writes
it after every seed (a long run keeps what it measured).

    nice -n 10 python bench/kits_robustness.py --seeds 0 1 2 --cost --out kits.json
    nice -n 10 python bench/kits_robustness.py --seeds 3 4 --single-only      # the rest of a 5-seed table

Subprocesses run with one torch thread (``--threads``): on a CPU shared with other jobs, two
threads per process oversubscribe the cores; scores do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# sample → tile → train → predict → evaluate options: the demo's small settings (demo/20_kits.sh)
CONFIG: dict[str, list[str]] = {
    "sample": ["--n-cases", "12", "--size", "96"],
    "tile": ["--workers", "2"],
    "train": ["--epochs", "16", "--batch-size", "8", "--lr", "0.002", "--patch-size", "96", "--depth", "3",
              "--width", "16", "--batch-norm", "--loss", "dice-ce", "--oversample", "0.5", "--workers", "0",
              "--device", "cpu"],
    "predict": ["--cases", "210-212", "--device", "cpu"],
    "evaluate": ["--truth", "answers"],
}
N_FOLDS = 3


def medchallenge(*args: str, cwd: Path, threads: int) -> str:
    """Run the CLI (quietly); returns stdout; stops the bench with the command's stderr on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "medchallenge", "kits", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): medchallenge kits {' '.join(args)}\n{done.stderr[-2000:]}")
    return done.stdout


def held_out(work: Path, checkpoints: list[str], name: str, tta: bool, threads: int) -> dict[str, float | None]:
    """Held-out composite, kidney and tumour Dice and the CLI predict seconds of an ensemble of ``checkpoints``."""
    flags = [arg for ck in checkpoints for arg in ("--checkpoint", ck)]
    started = time.perf_counter()
    medchallenge("predict", *flags, *CONFIG["predict"], *(["--tta"] if tta else []), "--out", f"pred-{name}",
                 cwd=work, threads=threads)
    seconds = time.perf_counter() - started
    report = json.loads(medchallenge("evaluate", "--predictions", f"pred-{name}", *CONFIG["evaluate"], "--out",
                                     f"eval-{name}", "--json", cwd=work, threads=threads))
    return {"score": report["score"], "kidney": report["kidney_dice"], "tumor": report["tumor_dice"],
            "predict_s": round(seconds, 2)}


def train(work: Path, out: str, seed: int, extra: list[str], threads: int) -> dict[str, Any]:
    """Train one run; its case counts, best.pt's epoch and validation composite, and the wall time."""
    import torch

    started = time.perf_counter()
    medchallenge("train", *CONFIG["train"], *extra, "--seed", str(seed), "--out", out, cwd=work, threads=threads)
    split = json.loads((work / out / "split.json").read_text())
    best = torch.load(work / out / "best.pt", weights_only=True, map_location="cpu")
    return {"train_cases": len(split["train"]), "val_cases": len(split["val"]), "best_epoch": best["epoch"],
            "best_val_composite": best["metrics"].get("composite_dice"),
            "train_s": round(time.perf_counter() - started, 1)}


def one_seed(seed: int, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant of one seed: ``{"variants": {name: scores}, "runs": {name: run facts}}``."""
    work, threads = root / f"kits-{seed}", args.threads
    extra = [] if args.mirror else ["--no-mirror"]
    medchallenge("sample", "--out", str(work), "--seed", str(seed), *CONFIG["sample"], cwd=root, threads=threads)
    medchallenge("tile", *CONFIG["tile"], cwd=work, threads=threads)
    runs = {"single": train(work, "runs/single", seed, extra, threads)}
    variants = {"single": held_out(work, ["runs/single"], "single", False, threads),
                "single_tta": held_out(work, ["runs/single"], "single-tta", True, threads)}
    if not args.single_only:
        for fold in range(N_FOLDS):
            runs[f"fold{fold}"] = train(work, f"runs/cv/fold{fold}", seed,
                                        [*extra, "--n-folds", str(N_FOLDS), "--fold", str(fold)], threads)
        pooled = json.loads(medchallenge("cv", "runs/cv", "--out", "cv", "--json", cwd=work, threads=threads))
        variants["cv_oof"] = {"score": pooled["score"], "kidney": pooled["kidney_dice"],
                              "tumor": pooled["tumor_dice"], "predict_s": None}
        for fold in range(N_FOLDS):
            variants[f"fold{fold}"] = held_out(work, [f"runs/cv/fold{fold}"], f"fold{fold}", False, threads)
        variants["ensemble"] = held_out(work, ["cv"], "ensemble", False, threads)
        variants["ensemble_tta"] = held_out(work, ["cv"], "ensemble-tta", True, threads)
    return {"variants": variants, "runs": runs}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: the composite per seed, mean ± sd (seeds with a defined score), kidney/tumour means, predict s."""
    def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
        finite = [v for v in values if v is not None]
        return (round(statistics.fmean(finite), 4) if finite else None,
                round(statistics.stdev(finite), 4) if len(finite) > 1 else None)

    out: dict[str, dict[str, Any]] = {}
    for variant in per_seed[0]["variants"]:
        rows = [r["variants"][variant] for r in per_seed]
        mean, sd = mean_sd([r["score"] for r in rows])
        times = [r["predict_s"] for r in rows if r["predict_s"] is not None]
        out[variant] = {"scores": [r["score"] for r in rows], "mean": mean, "sd": sd,
                        "kidney_mean": mean_sd([r["kidney"] for r in rows])[0],
                        "tumor_mean": mean_sd([r["tumor"] for r in rows])[0],
                        "predict_s": round(statistics.fmean(times), 2) if times else None}
    return out


def forward_cost(work: Path, repeats: int = 3) -> dict[str, Any]:
    """Seconds (best of ``repeats``) to segment the held-out slices of ``work`` per variant, in process."""
    import torch

    from medchallenge.core.inference import segment_batches
    from medchallenge.kits.data import find_cases, read_case
    from medchallenge.kits.predict import load_kits_models, padded

    device = torch.device("cpu")
    stacks = [read_case(c, with_labels=False, as_float=False)[0].axial_first()
              for c in find_cases(work) if c.number >= 210]  # the held-out (test) cases
    single, norm = load_kits_models([work / "runs/single"], device)
    folds, _ = load_kits_models([work / "cv"], device)
    variants = {"single": (single, False), "single_tta": (single, True), "ensemble": (folds, False),
                "ensemble_tta": (folds, True)}
    n = sum(len(s) for s in stacks)
    out: dict[str, Any] = {"slices": n, "size": list(stacks[0].shape[1:])}
    for name, (models, tta) in variants.items():
        forwards = [padded(m, norm.background) for m in models]
        best = min(_timed(segment_batches, forwards, stacks, device, prepare=norm, flips=tta) for _ in range(repeats))
        out[name] = {"seconds": round(best, 3), "slices_per_s": round(n / best, 1)}
    base = out["single"]["seconds"]
    for name in variants:
        out[name]["x_single"] = round(out[name]["seconds"] / base, 2)
    return out


def _timed(segment: Any, forwards: list, stacks: list, device: Any, **kwargs: Any) -> float:
    """Seconds to segment every stack (batches of 8 slices)."""
    started = time.perf_counter()
    for stack in stacks:
        segment(forwards, stack, device, 8, None, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--single-only", action="store_true", help="only the single model, with and without --tta")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false", help="train with --no-mirror")
    parser.add_argument("--cost", action="store_true", help="time the forwards of each variant in process")
    parser.add_argument("--epochs", type=int, default=None, help="train epochs instead of the demo's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each CLI process")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here after every seed")
    args = parser.parse_args()
    if args.epochs is not None:
        CONFIG["train"][CONFIG["train"].index("--epochs") + 1] = str(args.epochs)
    root = args.keep or Path(tempfile.mkdtemp(prefix="kits-robustness-"))
    root.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"seeds": args.seeds, "mirror": args.mirror, "config": CONFIG, "threads": args.threads,
                              "load_start": os.getloadavg()}
    started, per_seed = time.perf_counter(), []
    try:
        for seed in args.seeds:
            per_seed.append(one_seed(seed, root, args))
            report.update(summary=summarise(per_seed), runs={s: r["runs"] for s, r in zip(args.seeds, per_seed)},
                          wall_s=round(time.perf_counter() - started, 1), load_end=os.getloadavg())
            print(json.dumps({"seed": seed, **per_seed[-1]}), file=sys.stderr, flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=2))
        if args.cost and not args.single_only:
            import torch

            torch.set_num_threads(args.threads)
            report["cost"] = {**forward_cost(root / f"kits-{args.seeds[0]}"), "load": os.getloadavg()}
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
