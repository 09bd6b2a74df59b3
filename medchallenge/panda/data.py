"""The PANDA layout: train.csv / test.csv, slide and mask paths, the Gleason → ISUP table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.names import PANDA_ID, name_problem

PROVIDERS = ("radboud", "karolinska")
TRAIN_COLUMNS = ["image_id", "data_provider", "isup_grade", "gleason_score"]
TEST_COLUMNS = ["image_id", "data_provider"]
MASK_CLASSES = {"radboud": 6, "karolinska": 3}
"""Mask labels per provider: Radboud 0 background, 1 stroma, 2 benign epithelium, 3/4/5 Gleason
3/4/5; Karolinska 0 background, 1 benign tissue, 2 cancer."""

GLEASON_TO_ISUP = {
    "negative": 0, "0+0": 0,
    "3+3": 1, "3+4": 2, "4+3": 3,
    "4+4": 4, "3+5": 4, "5+3": 4,
    "4+5": 5, "5+4": 5, "5+5": 5,
}  # fmt: skip


def gleason_to_isup(score: str) -> int:
    """ISUP grade of a Gleason score (``negative`` and ``0+0`` are benign, grade 0)."""
    key = str(score).strip().lower()
    if key not in GLEASON_TO_ISUP:
        raise ValueError(f"unknown Gleason score {score!r}")
    return GLEASON_TO_ISUP[key]


def id_problems(frame: pd.DataFrame) -> list[str]:
    """Every problem of the ``image_id`` column: ``row N: ...`` (empty, duplicate, not a PANDA id).

    Row numbers count the header as row 1, as editors show them.
    """
    ids = frame["image_id"]
    problems = [f"row {r + 2}: empty image_id" for r in np.flatnonzero(ids.isna().to_numpy())]
    dup = ids.duplicated().to_numpy()
    n_dup = int(dup.sum())
    for row in np.flatnonzero(dup):
        first = int((ids == ids.iloc[row]).to_numpy().argmax())
        problems.append(f"row {row + 2}: duplicate image_id {ids.iloc[row]} (first at row {first + 2};"
                        f" {n_dup} duplicate row(s))")
    for row, value in enumerate(ids):
        problem = None if pd.isna(value) else name_problem(value, PANDA_ID)
        if problem is not None:
            problems.append(f"row {row + 2}: image_id {problem}: ids become file names and must be plain names")
    return problems


def check_image_ids(frame: pd.DataFrame, path: Path) -> None:
    """Refuse an empty, duplicated or non-PANDA ``image_id`` (32 lowercase hex), naming the row.

    Ids become paths (``train_images/{id}.tiff``, ``tiles/slides/{id}.npz``): a value such as
    ``../../evil/x`` would read and write outside the dataset and the cache, so every id is
    checked here, where it is read.
    """
    problems = id_problems(frame)
    if problems:
        raise DataError(path, problems[0])


def row_problems(frame: pd.DataFrame, graded: bool) -> tuple[list[str], list[str]]:
    """Every problem of a train.csv (``graded``) or test.csv frame, in the order the readers stop on them.

    Normalises ``data_provider`` (lowercase) and, when every grade is valid, ``isup_grade`` (int) in
    place. Returns (problems ``row N: ...``, ids whose gleason_score disagrees with their isup_grade).
    """
    problems = id_problems(frame)
    providers = frame["data_provider"].astype(str).str.strip().str.lower()
    for row in np.flatnonzero(~providers.isin(PROVIDERS).to_numpy()):
        problems.append(f"row {row + 2}: unknown data_provider '{frame['data_provider'].iloc[row]}'"
                        " (expected radboud or karolinska)")
    frame["data_provider"] = providers
    if not graded:
        return problems, []
    grades = pd.to_numeric(frame["isup_grade"], errors="coerce")
    bad = (grades.isna() | (grades % 1 != 0) | (grades < 0) | (grades > 5)).to_numpy()
    for row in np.flatnonzero(bad):
        problems.append(f"row {row + 2}: isup_grade '{frame['isup_grade'].iloc[row]}' is not an integer 0–5")
    if not bad.any():
        frame["isup_grade"] = grades.astype(int)
    inconsistent = []
    for row, (image_id, score, grade) in enumerate(zip(frame["image_id"], frame["gleason_score"], grades)):
        try:
            expected = gleason_to_isup(score)
        except ValueError:
            problems.append(f"row {row + 2}: unknown gleason_score '{score}' for {image_id}")
            continue
        if not bad[row] and expected != grade:
            inconsistent.append(image_id)
    return problems, inconsistent


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """Read ``train.csv`` (image_id, data_provider, isup_grade, gleason_score), checked.

    Rows whose Gleason score disagrees with their ISUP grade keep the given grade and are
    reported once (the real file has one: b0a92a74cb53899311acc30b7405e101, 4+3 labelled 2);
    ``frame.attrs["inconsistent"]`` lists their ids.

    Raises:
        DataError: a missing column, an empty, duplicate or non-PANDA id (32 lowercase hex), an
            unknown provider, an ISUP grade outside 0–5 or an unknown Gleason score, naming the row.
    """
    path = Path(path)
    frame = read_csv(path, required=TRAIN_COLUMNS, dtype={"image_id": str, "gleason_score": str})
    problems, inconsistent = row_problems(frame, graded=True)
    if problems:
        raise DataError(path, problems[0])
    if inconsistent:
        console.warn(f"{path}: {len(inconsistent)} row(s) whose gleason_score disagrees with isup_grade"
                     f" (kept as given): {', '.join(inconsistent[:5])}")
    frame.attrs["inconsistent"] = inconsistent
    return frame


def read_test_csv(path: str | Path) -> pd.DataFrame:
    """Read ``test.csv`` (image_id, data_provider), checked as :func:`read_train_csv` checks them."""
    path = Path(path)
    frame = read_csv(path, required=TEST_COLUMNS, dtype={"image_id": str})
    problems, _ = row_problems(frame, graded=False)
    if problems:
        raise DataError(path, problems[0])
    return frame


def slide_path(data: Path, split: str, image_id: str) -> Path:
    """``train_images/{id}.tiff`` or ``test_images/{id}.tiff``."""
    return Path(data) / f"{split}_images" / f"{image_id}.tiff"


def mask_path(data: Path, image_id: str) -> Path:
    """``train_label_masks/{id}_mask.tiff``."""
    return Path(data) / "train_label_masks" / f"{image_id}_mask.tiff"
