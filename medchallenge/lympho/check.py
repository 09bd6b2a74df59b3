"""``lympho check --data DIR``: the dataset checked before ``tile``, every problem with its file.

Reads ``clinical_annotation.csv`` with the pipeline's own validation (every bad row, not only the
first), lists each patient's folder as ``tile`` does, and reads each image's header with PIL
(size only, nothing decoded). Blocking problems are those that stop ``tile``: a bad CSV row, a
missing or empty patient folder, an unreadable image, an image smaller than ``--crop``. Folders
the CSV does not list are warnings (``tile`` ignores them).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError
from medchallenge.lympho.cache import check_crop, image_size
from medchallenge.lympho.data import LABELS, patient_folder, patient_images, unlisted_folders, validate_annotations

CSV = "clinical_annotation.csv"


def listed_images(job: tuple[Path, str, int]) -> list[Path]:
    """A patient's images as ``tile`` finds them; a missing folder says where it is when in the other split."""
    data, patient, label = job
    try:
        return patient_images(data, patient, label)
    except DataError as err:
        other = patient_folder(data, patient, 0 if label == -1 else -1)
        if not other.is_dir():
            raise
        where = "testset/ (a test patient)" if label == -1 else "trainset/ (a labelled patient)"
        raise DataError(err.path, f"{err.problem}: it is in {other.parent.name}/, but LABEL {label}"
                                  f" puts it in {where}") from err


def check_dataset(data: Path, crop: int = 112, workers: int = 0) -> CheckReport:
    """Check the lymphocytosis layout under ``data`` (``crop``: the ``tile --crop`` it must allow)."""
    data = Path(data)
    report = CheckReport("lympho", data)
    try:
        frame, problems = validate_annotations(data / CSV)
    except DataError as err:  # no CSV, or a missing column: nothing else can be checked
        report.add(data / CSV, err.problem)
        return report
    for _, message in problems:
        report.add(data / CSV, message)
    good = frame.drop(index=sorted({row for row, _ in problems}))
    _count_patients(report, good, len(frame))
    for folder in unlisted_folders(data, frame["ID"].astype(str)):
        report.add(data / folder, "folder not in clinical_annotation.csv: tile ignores it", blocking=False)
    jobs = [(data, pid, int(label)) for pid, label in zip(good["ID"], good["LABEL"])]
    bags = check_each(jobs, listed_images, report, path_of=lambda job: patient_folder(*job))
    files = [f for bag in bags if bag for f in bag]
    sizes = check_each(files, image_size, report, path_of=lambda f: f, workers=workers)
    for path, size in zip(files, sizes):
        try:
            if size:
                check_crop(path, size, crop)
        except DataError as err:  # kept in the size ranges: it is readable, only too small for this crop
            report.add(path, err.problem)
    for split in ("trainset", "testset"):
        report.counts[f"images in {split}/"] = sum(len(bag) for job, bag in zip(jobs, bags)
                                                   if bag and patient_folder(*job).parent.name == split)
    report.ranges["bag size (images per patient)"] = value_range(len(bag) for bag in bags if bag)
    report.ranges["image width (px)"] = value_range(s[0] for s in sizes if s)
    report.ranges["image height (px)"] = value_range(s[1] for s in sizes if s)
    report.ranges["age (years)"] = _rounded(good["AGE"])
    report.ranges["lymphocyte count (10⁹/L)"] = _rounded(good["LYMPH_COUNT"])
    return report


def _count_patients(report: CheckReport, good: pd.DataFrame, n_rows: int) -> None:
    report.counts["rows in clinical_annotation.csv"] = n_rows
    for label, name in LABELS.items():
        report.counts[f"{name} (LABEL {label})"] = int((good["LABEL"] == label).sum())


def _rounded(values: pd.Series) -> tuple[float | None, float | None]:
    low, high = value_range(float(v) for v in values.dropna())
    return (None, None) if low is None else (round(low, 2), round(high, 2))
