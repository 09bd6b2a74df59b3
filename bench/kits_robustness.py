"""KiTS results that hold up (issue 14): seeds, single model vs fold ensemble vs ensemble + TTA.

For each challenge and seed, on the project's own ``sample`` data with the small settings of
``make demo``, through the CLI exactly as a user runs it:

- ``single``: one model on the default split, predicted and scored on the held-out test cases;
- ``cv``: ``--n-folds 3``, the pooled out-of-fold score (``cv``);
- ``ensemble``: the three fold models averaged (``predict --checkpoint CV``);
- ``ensemble_tta``: the same with ``--tta``.

Prints one JSON object: per challenge and variant the held-out official metric per seed, mean ± sd,
and the predict time of each variant (the cost of ensembles and TTA).

    python bench/kits_robustness.py --seeds 0 1 2 [--single-only]

(The other challenges have their own: panda_folds, lympho_robustness, lits_ensemble, brats_seeds, midog_seeds.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# sample → tile → train options → predict options → evaluate options, per challenge (the demo's small settings)
CONFIGS: dict[str, dict[str, list[str]]] = {
    "kits": {
        "sample": ["--n-cases", "12", "--size", "96"],
        "tile": ["--workers", "2"],
        "train": ["--epochs", "8", "--batch-size", "8", "--lr", "0.002", "--patch-size", "96", "--depth", "3",
                  "--width", "16", "--batch-norm", "--loss", "dice-ce", "--oversample", "0.5", "--workers", "0"],
        "predict": ["--cases", "210-212"],
        "evaluate": ["--truth", "answers"],
    },
}


def medchallenge(*args: str, cwd: Path) -> str:
    """Run the CLI (quietly); returns stdout; stops the bench with the command's stderr on failure."""
    done = subprocess.run([sys.executable, "-m", "medchallenge", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): medchallenge {' '.join(args)}\n{done.stderr[-2000:]}")
    return done.stdout


def held_out(challenge: str, cfg: dict[str, list[str]], work: Path, checkpoints: list[str], name: str,
             tta: bool) -> tuple[float | None, float]:
    """(the held-out official score, predict seconds) of an ensemble of ``checkpoints``."""
    flags = [arg for ck in checkpoints for arg in ("--checkpoint", ck)]
    started = time.perf_counter()
    medchallenge(challenge, "predict", *flags, *cfg["predict"], *(["--tta"] if tta else []), "--out", f"pred-{name}",
                 cwd=work)
    seconds = time.perf_counter() - started
    report = json.loads(medchallenge(challenge, "evaluate", "--predictions", f"pred-{name}", *cfg["evaluate"],
                                     "--out", f"eval-{name}", "--json", cwd=work))
    return report["score"], seconds


def one_seed(challenge: str, seed: int, root: Path, single_only: bool) -> dict[str, dict[str, float | None]]:
    cfg = CONFIGS[challenge]
    work = root / f"{challenge}-{seed}"
    medchallenge(challenge, "sample", "--out", str(work), "--seed", str(seed), *cfg["sample"], cwd=root)
    medchallenge(challenge, "tile", *cfg["tile"], cwd=work)
    medchallenge(challenge, "train", *cfg["train"], "--seed", str(seed), "--out", "runs/single", cwd=work)
    score, seconds = held_out(challenge, cfg, work, ["runs/single"], "single", tta=False)
    result: dict[str, dict[str, float | None]] = {"single": {"score": score, "predict_s": seconds}}
    if single_only:
        return result
    for fold in range(3):
        medchallenge(challenge, "train", *cfg["train"], "--seed", str(seed), "--n-folds", "3", "--fold", str(fold),
                     "--out", f"runs/cv/fold{fold}", cwd=work)
    pooled = json.loads(medchallenge(challenge, "cv", "runs/cv", "--out", "cv", "--json", cwd=work))
    result["cv_oof"] = {"score": pooled["score"], "predict_s": None}
    for name, tta in (("ensemble", False), ("ensemble_tta", True)):
        score, seconds = held_out(challenge, cfg, work, ["cv"], name, tta)
        result[name] = {"score": score, "predict_s": seconds}
    return result


def summarise(per_seed: list[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, float | list | None]]:
    """Per variant: the scores per seed, mean ± sd (over the seeds with a defined score), mean predict time."""
    out: dict[str, dict[str, float | list | None]] = {}
    for variant in per_seed[0]:
        scores = [r[variant]["score"] for r in per_seed]
        finite = [s for s in scores if s is not None]
        times = [r[variant]["predict_s"] for r in per_seed if r[variant]["predict_s"] is not None]
        out[variant] = {"scores": scores, "mean": statistics.fmean(finite) if finite else None,
                        "sd": statistics.stdev(finite) if len(finite) > 1 else None,
                        "predict_s": statistics.fmean(times) if times else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--challenges", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--single-only", action="store_true", help="only the single model (the seed table)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="robustness-"))
    root.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"seeds": args.seeds}
    try:
        for challenge in args.challenges:
            started = time.perf_counter()
            per_seed = [one_seed(challenge, seed, root, args.single_only) for seed in args.seeds]
            report[challenge] = {**summarise(per_seed), "wall_s": round(time.perf_counter() - started, 1)}
            print(json.dumps({challenge: report[challenge]}), file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
