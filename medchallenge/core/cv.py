"""``medchallenge <challenge> cv RUN...``: pool the out-of-fold predictions of fold runs and score them.

Each run trained with ``--n-folds N --fold K`` holds split.json and oof.csv (its validation
predictions with best.pt's weights). A cross-validation result is the challenge's official metric
on the pooled out-of-fold rows (every case predicted once, by the model that did not see it), next
to the mean ± sd of the per-fold scores. The folds must come from one split: the same challenge,
``--n-folds`` and ``--seed``, each fold once, no case in two folds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.report import EvaluationReport, write_report

Score = Callable[[pd.DataFrame], dict[str, float]]


@dataclass
class FoldRun:
    """One fold's run folder, its place in the split and its out-of-fold rows."""

    run: Path
    n_folds: int
    fold: int
    seed: int
    oof: pd.DataFrame


def expand_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders: each path itself, or the run folders inside it (a folder of fold runs)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if (p / "config.json").is_file() and not p.is_symlink())
            if not inside:
                raise DataError(path, "neither a run folder nor a folder of run folders (no config.json)")
            runs.extend(inside)
        else:
            raise DataError(path, "not found")
    return runs


def read_fold(run: Path, challenge: str) -> FoldRun:
    """The fold run at ``run``; DataError when it is not a finished cross-validation run of ``challenge``."""
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(run / "config.json", f"unreadable ({err})") from None
    if config.get("challenge") != challenge:
        raise DataError(run, f"a run of challenge '{config.get('challenge')}', expected '{challenge}'")
    if not config.get("n_folds"):
        raise DataError(run, "not a cross-validation run (trained without --n-folds)")
    oof_file = run / "oof.csv"
    if not oof_file.is_file():
        raise DataError(oof_file, "not found: the run has not finished (oof.csv is written after the last epoch)")
    oof = pd.read_csv(oof_file, dtype={"id": str})
    if "id" not in oof.columns:
        raise DataError(oof_file, "no 'id' column")
    return FoldRun(run, int(config["n_folds"]), int(config["fold"]), int(config["seed"]), oof)


def check_folds(folds: list[FoldRun]) -> list[int]:
    """Refuse folds of different splits, a fold twice or a case in two folds; returns the missing folds."""
    if not folds:
        raise OptionError("cv needs at least one run folder")
    first = folds[0]
    for other in folds[1:]:
        if (other.n_folds, other.seed) != (first.n_folds, first.seed):
            raise OptionError(f"{other.run}: --n-folds {other.n_folds} --seed {other.seed}, but {first.run} has"
                              f" --n-folds {first.n_folds} --seed {first.seed}: folds of different splits")
    seen: dict[int, Path] = {}
    owner: dict[str, Path] = {}
    for fold in folds:
        if fold.fold in seen:
            raise OptionError(f"fold {fold.fold} given twice: {seen[fold.fold]} and {fold.run}")
        seen[fold.fold] = fold.run
        for case in fold.oof["id"]:
            if case in owner:
                raise DataError(fold.run / "oof.csv", f"case {case} is also in {owner[case] / 'oof.csv'}")
            owner[case] = fold.run
    return sorted(set(range(first.n_folds)) - set(seen))


def cross_validate(paths: Sequence[Path], challenge: str, score: Score) -> EvaluationReport:
    """The pooled out-of-fold score of the fold runs, with per-fold scores and their mean ± sd."""
    folds = sorted((read_fold(run, challenge) for run in expand_runs(paths)), key=lambda f: f.fold)
    missing = check_folds(folds)
    if missing:
        console.warn(f"folds {missing} of {folds[0].n_folds} are missing: the pooled score covers part of the data")
    pooled = pd.concat([f.oof for f in folds], ignore_index=True)
    overall = score(pooled)
    metric = next(iter(overall))
    per_fold = {f.fold: _number(score(f.oof)[metric]) for f in folds}
    finite = [v for v in per_fold.values() if v is not None]
    summary: dict[str, Any] = {
        **{k: _number(v) for k, v in overall.items() if k != metric},
        "per_fold": {str(k): v for k, v in per_fold.items()},
        "fold_mean": float(np.mean(finite)) if finite else None,
        "fold_sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
        "n_folds": folds[0].n_folds, "seed": folds[0].seed, "missing_folds": missing,
        "runs": [str(f.run.absolute()) for f in folds],
    }
    return EvaluationReport(challenge, metric, _number(overall[metric]), len(pooled), summary, cases=pooled,
                            plots=lambda out: _plot_folds(per_fold, metric, out))


def run_cv(paths: Sequence[Path], challenge: str, score: Score, out: Path, as_json: bool) -> EvaluationReport:
    """The ``cv`` verb: cross-validate, write metrics.json/cases.csv/plot into ``out``, print table or JSON."""
    import typer

    from medchallenge.core.jsonio import dumps_json

    report = cross_validate(paths, challenge, score)
    write_report(report, out)
    if as_json:
        typer.echo(dumps_json(report.to_json()))
    else:
        _print_table(report)
    return report


def _number(value: Any) -> float | None:
    value = None if value is None else float(value)
    return None if value is None or math.isnan(value) else value


def _print_table(report: EvaluationReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("fold", report.metric, title=f"{report.challenge} cross-validation ({report.n} cases)")
    for fold, value in report.summary["per_fold"].items():
        table.add_row(fold, _shown(value))
    mean, sd = report.summary["fold_mean"], report.summary["fold_sd"]
    table.add_row("mean ± sd", f"{_shown(mean)} ± {_shown(sd)}")
    table.add_row("[bold]pooled out-of-fold[/bold]", f"[bold]{_shown(report.score)}[/bold]")
    Console().print(table)


def _shown(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _plot_folds(per_fold: dict[int, float | None], metric: str, out: Path) -> None:
    from medchallenge.core.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    folds = sorted(per_fold)
    ax.bar([str(f) for f in folds], [per_fold[f] if per_fold[f] is not None else 0 for f in folds])
    ax.set_xlabel("fold")
    ax.set_ylabel(metric)
    ax.set_title("per-fold validation score")
    _save(fig, out / "folds.png")
