"""``panda clean``: drop slides whose label the out-of-fold prediction contradicts (PANDA's 1st place).

The winners trained folds, predicted every training slide out of fold, and dropped the slides
where ``|isup − oof|`` exceeded a threshold, then retrained. Rules (``--rule``):

- ``pnd`` (the 1st place's per-provider rule): the threshold depends on the provider and the
  slide's true ISUP grade g — Radboud [1.3, 0.8, 0.8, 0.8, 0.8, 1.3][g], Karolinska
  [1.5, 1, 1, 1, 1, 1.5][g];
- ``fixed``: one threshold for every slide (``--max-diff``, the 1st place's simple rule 1.6).

A slide is dropped when ``diff > threshold`` (strictly). ``oof`` is the continuous ordinal score
(the ``score`` column of ``cv``'s cases.csv or a run's oof.csv), not the rounded grade.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import read_csv, write_csv
from medchallenge.panda.data import read_train_csv

PND_THRESHOLDS = {"radboud": (1.3, 0.8, 0.8, 0.8, 0.8, 1.3), "karolinska": (1.5, 1.0, 1.0, 1.0, 1.0, 1.5)}
RULES = ("pnd", "fixed")
OOF_COLUMNS = ["id", "provider", "isup", "score"]


def read_oof(path: Path) -> tuple[pd.DataFrame, Path]:
    """The pooled out-of-fold rows: a ``cv`` folder (its cases.csv) or an oof.csv/cases.csv file."""
    path = Path(path)
    file = path / "cases.csv" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise DataError(path, "no cases.csv: give a `panda cv` output folder or an oof.csv")
    frame = read_csv(file, required=OOF_COLUMNS, dtype={"id": str})
    scores = pd.to_numeric(frame["score"], errors="coerce")
    grades = pd.to_numeric(frame["isup"], errors="coerce")
    for column, values in (("score", scores), ("isup", grades)):
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(file, f"row {row + 2}: {column} '{frame[column].iloc[row]}' is not a number")
    if ((grades % 1 != 0) | (grades < 0) | (grades > 5)).any():
        raise DataError(file, "isup values outside the integers 0–5")
    unknown = sorted(set(frame["provider"]) - set(PND_THRESHOLDS))
    if unknown:
        raise DataError(file, f"unknown provider(s) {', '.join(map(str, unknown))} (expected radboud or karolinska)")
    if frame["id"].duplicated().any():
        raise DataError(file, f"id {frame['id'][frame['id'].duplicated()].iloc[0]} appears twice")
    return frame.assign(isup=grades.astype(int), score=scores.astype(float)), file


def thresholds(frame: pd.DataFrame, rule: str, max_diff: float | None) -> np.ndarray:
    """The drop threshold of each row under ``rule``."""
    if rule == "fixed":
        if max_diff is None:
            raise OptionError("--rule fixed needs --max-diff (the 1st place used 1.6)")
        return np.full(len(frame), float(max_diff))
    if rule != "pnd":
        raise OptionError(f"--rule {rule}: expected one of {', '.join(RULES)}")
    if max_diff is not None:
        raise OptionError("--max-diff is for --rule fixed; --rule pnd uses the per-provider thresholds")
    return np.array([PND_THRESHOLDS[p][g] for p, g in zip(frame["provider"], frame["isup"])])


def clean_labels(oof: Path, data: Path, out: Path, rule: str = "pnd", max_diff: float | None = None) -> pd.DataFrame:
    """Write ``out/train.csv`` (``data/train.csv`` without the dropped slides) and ``out/dropped.csv``.

    Returns the dropped rows (image_id, provider, isup, oof, diff, threshold, reason).

    Raises:
        DataError: an unreadable OOF file or train.csv, an OOF id not in train.csv.
    """
    frame, file = read_oof(oof)
    train = read_train_csv(Path(data) / "train.csv")
    unknown = sorted(set(frame["id"]) - set(train["image_id"]))
    if unknown:
        raise DataError(file, f"{len(unknown)} id(s) not in {Path(data) / 'train.csv'}, e.g. {unknown[0]}")
    limit = thresholds(frame, rule, max_diff)
    diff = (frame["isup"] - frame["score"]).abs().to_numpy()
    drop = diff > limit
    why = "|isup - oof| > per-provider threshold for its ISUP grade (pnd)" if rule == "pnd" else \
        f"|isup - oof| > --max-diff {max_diff}"
    dropped = pd.DataFrame({"image_id": frame["id"], "provider": frame["provider"], "isup": frame["isup"],
                            "oof": frame["score"], "diff": diff.round(6), "threshold": limit,
                            "reason": why})[drop].reset_index(drop=True)
    kept = train[~train["image_id"].isin(set(dropped["image_id"]))]
    write_csv(Path(out) / "dropped.csv", dropped)
    write_csv(Path(out) / "train.csv", kept.reset_index(drop=True))
    unscored = len(train) - len(frame)
    console.log(f"dropped {len(dropped)} of {len(frame)} out-of-fold slide(s) ({rule});"
                f" {out}/train.csv keeps {len(kept)} rows" + (f" ({unscored} without an OOF score kept)" if unscored
                                                                else ""))
    return dropped
