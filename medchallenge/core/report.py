"""One evaluate report for every challenge: metrics.json, a per-case CSV, plots, strict ``--json``.

Every ``evaluate`` builds an :class:`EvaluationReport` and hands it to :func:`write_report`. The
JSON object always has the common keys ``challenge``, ``metric``, ``score``, ``n`` and ``version``
(``score`` is the official headline number, ``null`` when undefined), then the challenge's own.
Outputs go to ``--out``, by default ``./evaluation`` in the current folder: never beside the
truth or the predictions, which may be read-only or shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medchallenge import __version__
from medchallenge.core.io import write_csv, write_json
from medchallenge.core.jsonio import strict_json

COMMON_KEYS = ("challenge", "metric", "score", "n", "version")
DEFAULT_OUT = Path("evaluation")


@dataclass
class EvaluationReport:
    """The result of one ``evaluate``.

    Attributes:
        challenge: the challenge key ("kits").
        metric: the official metric's name ("kidney and tumour Dice").
        score: the headline number (NaN or None when undefined).
        n: how many cases/slides/images/patients were scored.
        summary: the challenge's own keys (per-region scores, per-provider kappas, ...).
        cases: one row per scored item (case id first), or None.
        plots: draws the challenge's plots into the folder it is given.
    """

    challenge: str
    metric: str
    score: float | None
    n: int
    summary: dict[str, Any] = field(default_factory=dict)
    cases: pd.DataFrame | None = None
    plots: Callable[[Path], None] | None = None

    def to_json(self) -> dict[str, Any]:
        """The strict JSON object: the common keys first, then the challenge's own."""
        clash = set(COMMON_KEYS) & set(self.summary)
        if clash:
            raise ValueError(f"summary keys {sorted(clash)} clash with the common keys")
        head = {"challenge": self.challenge, "metric": self.metric, "score": self.score, "n": self.n,
                "version": __version__}
        return strict_json({**head, **self.summary})


def write_report(report: EvaluationReport, out: Path | None = None) -> Path:
    """Write metrics.json, ``cases.csv`` (when there are cases) and the plots into ``out``; returns it."""
    out = Path(out) if out is not None else Path.cwd() / DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", report.to_json())
    if report.cases is not None:
        write_csv(out / "cases.csv", report.cases)
    if report.plots is not None:
        report.plots(out)
    return out
