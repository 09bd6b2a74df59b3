"""The lymphocytosis layout: ``clinical_annotation.csv``, ``trainset/<ID>/*.jpg``, ``testset/<ID>/*.jpg``.

The CSV has an unnamed index column, then ``ID,LABEL,GENDER,DOB,LYMPH_COUNT``: LABEL 1 malignant,
0 reactive, −1 test; DOB in ``M/D/YYYY`` or ``DD-MM-YYYY``; GENDER ``M``/``F`` (one real row has a
lowercase ``f``); LYMPH_COUNT in 10⁹/L. Age is computed in years at :data:`AGE_REFERENCE`.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.names import check_names

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


def read_annotations(path: str | Path) -> pd.DataFrame:
    """Read and check ``clinical_annotation.csv``; adds ``AGE`` (years), ``BIRTH_YEAR``, ``BIRTH_MONTH``.

    Raises:
        DataError: a missing column, an ID that is not a plain name, a duplicate ID, a LABEL outside {−1, 0, 1}, an unknown gender,
            an unparseable DOB or lymphocyte count, naming the row.
    """
    path = Path(path)
    frame = read_csv(path, required=["ID", "LABEL", "GENDER", "DOB", "LYMPH_COUNT"], dtype={"ID": str, "DOB": str})
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed")])
    check_names(frame["ID"], path, what="ID")  # IDs become trainset/<ID>, testset/<ID>, cache/images/<ID>.npy
    dup = frame["ID"].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise DataError(path, f"row {row + 2}: duplicate ID {frame['ID'].iloc[row]}")
    ages, years, months = [], [], []
    for row, (pid, dob) in enumerate(zip(frame["ID"], frame["DOB"])):
        try:
            born = parse_dob(dob)
        except ValueError as err:
            raise DataError(path, f"row {row + 2} ({pid}): {err}") from err
        ages.append((AGE_REFERENCE - born).days / 365.25)
        years.append(born.year)
        months.append(born.month)
    labels = pd.to_numeric(frame["LABEL"], errors="coerce")
    bad = ~labels.isin([-1, 0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(path, f"row {row + 2} ({frame['ID'].iloc[row]}): LABEL '{frame['LABEL'].iloc[row]}' not in -1, 0, 1")
    gender = frame["GENDER"].astype(str).str.strip().str.upper()
    bad = ~gender.isin(["M", "F"])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(path, f"row {row + 2} ({frame['ID'].iloc[row]}): GENDER '{frame['GENDER'].iloc[row]}' not M or F")
    count = pd.to_numeric(frame["LYMPH_COUNT"], errors="coerce")
    bad = count.isna() | (count <= 0)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(path, f"row {row + 2} ({frame['ID'].iloc[row]}): LYMPH_COUNT '{frame['LYMPH_COUNT'].iloc[row]}'"
                              " is not a positive number")
    return frame.assign(LABEL=labels.astype(int), GENDER=gender, LYMPH_COUNT=count.astype(float),
                        AGE=np.array(ages), BIRTH_YEAR=years, BIRTH_MONTH=months).reset_index(drop=True)


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


def warn_unlisted_folders(data: Path, frame: pd.DataFrame) -> list[str]:
    """Warn about (and return) patient folders that the CSV does not list; they are ignored."""
    listed = set(frame["ID"])
    extra = [f"{split}/{p.name}" for split in ("trainset", "testset") if (Path(data) / split).is_dir()
             for p in sorted((Path(data) / split).iterdir()) if p.is_dir() and p.name not in listed]
    if extra:
        console.warn(f"{len(extra)} folder(s) not in clinical_annotation.csv, ignored: {', '.join(extra[:5])}")
    return extra
