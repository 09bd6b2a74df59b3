"""The lymphocytosis layout: ``clinical_annotation.csv``, ``trainset/<ID>/*.jpg``, ``testset/<ID>/*.jpg``.

The CSV has an unnamed index column, then ``ID,LABEL,GENDER,DOB,LYMPH_COUNT``: LABEL 1 malignant,
0 reactive, −1 test; DOB in ``M/D/YYYY`` or ``DD-MM-YYYY``; GENDER ``M``/``F`` (one real row has a
lowercase ``f``); LYMPH_COUNT in 10⁹/L. Age is computed in years at :data:`AGE_REFERENCE`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.names import name_problem

AGE_REFERENCE = date(2020, 1, 1)
"""Date ages are computed at (the dataset was collected around 2019)."""
LABELS = {1: "malignant", 0: "reactive", -1: "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_dob(text: str) -> date:
    """``M/D/YYYY`` or ``DD-MM-YYYY`` → date; ValueError otherwise."""
    text = str(text).strip()
    for fmt in ("%m/%d/%Y", "%d-%m-%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"date of birth '{text}' is neither M/D/YYYY nor DD-MM-YYYY")


def validate_annotations(path: str | Path) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Read ``clinical_annotation.csv`` and find every bad row (``lympho check`` reports them all).

    Returns every row (with ``AGE`` in years, ``BIRTH_YEAR``, ``BIRTH_MONTH``, NaN where the DOB is
    bad) and the problems as (0-based row, message), ordered as :func:`read_annotations` raises them:
    IDs that are not plain names, duplicate IDs, DOBs, LABELs, GENDERs, LYMPH_COUNTs.

    Raises:
        DataError: the file is missing, unreadable or lacks a column (nothing else can be checked).
    """
    path = Path(path)
    frame = read_csv(path, required=["ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT"], dtype={"ID": str, "DOB": str})
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed")]).reset_index(drop=True)
    ids = frame["ID"]
    found: list[tuple[int, int, str]] = []  # (kind, row, message): sorted by kind, then row
    for i, value in enumerate(ids):  # IDs become trainset/<ID>, testset/<ID>, cache/images/<ID>.npy
        problem = name_problem(value)
        if problem is not None:
            found.append((0, i, f"row {i + 2}: ID {problem}: ids become file names and must be plain names"))
    found += [(1, i, f"row {i + 2}: duplicate ID {ids.iloc[i]}") for i in np.flatnonzero(ids.duplicated().to_numpy())]
    born: list[date | None] = []
    for i, (pid, dob) in enumerate(zip(ids, frame["DOB"])):
        try:
            born.append(parse_dob(dob))
        except ValueError as err:
            born.append(None)
            found.append((2, i, f"row {i + 2} ({pid}): {err}"))
    labels = pd.to_numeric(frame["LABEL"], errors="coerce")
    found += [(3, i, f"row {i + 2} ({ids.iloc[i]}): LABEL '{frame['LABEL'].iloc[i]}' not in -1, 0, 1")
              for i in np.flatnonzero(~labels.isin([-1, 0, 1]).to_numpy())]
    gender = frame["GENDER"].astype(str).str.strip().str.upper()
    found += [(4, i, f"row {i + 2} ({ids.iloc[i]}): GENDER '{frame['GENDER'].iloc[i]}' not M or F")
              for i in np.flatnonzero(~gender.isin(["M", "F"]).to_numpy())]
    count = pd.to_numeric(frame["LYMPH_COUNT"], errors="coerce")
    found += [(5, i, f"row {i + 2} ({ids.iloc[i]}): LYMPH_COUNT '{frame['LYMPH_COUNT'].iloc[i]}'"
                     " is not a positive number") for i in np.flatnonzero((count.isna() | (count <= 0)).to_numpy())]
    frame = frame.assign(LABEL=labels, GENDER=gender, LYMPH_COUNT=count.astype(float),
                         AGE=[np.nan if b is None else (AGE_REFERENCE - b).days / 365.25 for b in born],
                         BIRTH_YEAR=[np.nan if b is None else b.year for b in born],
                         BIRTH_MONTH=[np.nan if b is None else b.month for b in born])
    return frame, [(i, message) for _, i, message in sorted(found)]


def read_annotations(path: str | Path) -> pd.DataFrame:
    """Read and check ``clinical_annotation.csv``; adds ``AGE`` (years), ``BIRTH_YEAR``, ``BIRTH_MONTH``.

    Raises:
        DataError: a missing column, an ID that is not a plain name, a duplicate ID, a LABEL outside {−1, 0, 1},
            an unknown gender, an unparseable DOB or lymphocyte count, naming the row (the first problem of
            :func:`validate_annotations`).
    """
    frame, problems = validate_annotations(path)
    if problems:
        raise DataError(Path(path), problems[0][1])
    return frame.astype({"LABEL": int, "BIRTH_YEAR": int, "BIRTH_MONTH": int})


def patient_folder(data: Path, patient: str, label: int) -> Path:
    """``trainset/<ID>`` for labelled patients, ``testset/<ID>`` for test ones."""
    return Path(data) / ("testset" if label == -1 else "trainset") / patient


def patient_images(data: Path, patient: str, label: int) -> list[Path]:
    """The images of one patient, sorted; a missing or empty folder is a DataError naming the patient."""
    folder = patient_folder(data, patient, label)
    if not folder.is_dir():
        raise DataError(folder, f"no image folder for patient {patient}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(folder, f"no images for patient {patient}")
    return files


def unlisted_folders(data: Path, ids: Iterable[str]) -> list[str]:
    """``trainset/<name>`` and ``testset/<name>`` folders whose name is not among ``ids`` (ignored by tile)."""
    listed = set(ids)
    return [f"{split}/{p.name}" for split in ("trainset", "testset") if (Path(data) / split).is_dir()
            for p in sorted((Path(data) / split).iterdir()) if p.is_dir() and p.name not in listed]


def warn_unlisted_folders(data: Path, frame: pd.DataFrame) -> list[str]:
    """Warn about (and return) patient folders that the CSV does not list; they are ignored."""
    extra = unlisted_folders(data, frame["ID"])
    if extra:
        console.warn(f"{len(extra)} folder(s) not in clinical_annotation.csv, ignored: {', '.join(extra[:5])}")
    return extra
