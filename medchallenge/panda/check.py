"""``panda check --data DIR``: the dataset checked as ``tile`` would read it, without decoding a slide.

What is checked, with the readers the pipeline itself uses:

- ``train.csv`` / ``test.csv``: columns, ids (32 lowercase hex, no duplicates), providers, ISUP
  grades 0–5, Gleason scores (:func:`medchallenge.panda.data.row_problems`, the readers' own rules;
  every bad row is listed, not only the first). A Gleason score that disagrees with its ISUP grade
  by the challenge's table is a warning (the readers keep the given grade, as the real file needs).
- slides ``{split}_images/{id}.tiff`` through :func:`medchallenge.core.wsi.open_slide` (headers,
  plus one 16 px region of the coarsest level decoded, so corrupt tile data is found): a missing,
  unreadable or non-8-bit-RGB slide, and one without the ``--level`` asked for, stop ``tile``
  (blocking; a missing slide is a warning with ``--skip-missing``, as for ``tile``).
- masks ``train_label_masks/{id}_mask.tiff``: readable, the tiling level present (blocking);
  labels within the provider's set (Radboud 0–5, Karolinska 0–2), read from the mask's coarsest
  level only (blocking, as ``tile`` stops on them); level-0 size equal to the slide's (a warning:
  ``tile`` would cut misaligned masks without stopping); masks without a slide (warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.names import PANDA_ID
from medchallenge.core.wsi import SlideReader, open_slide
from medchallenge.panda.data import (
    PROVIDERS,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    gleason_to_isup,
    mask_path,
    row_problems,
    slide_path,
)
from medchallenge.panda.tiles import auto_level, level_problem, mask_label_problem

MAX_LABEL_PIXELS = 4096 * 4096
"""Mask label values are read from the coarsest level only when it is at most this many pixels."""
MAX_LISTED = 10
"""Missing slides are listed one by one up to this many, then as one problem naming the first."""


@dataclass
class SlideJob:
    """One slide to check: its file, its mask file (train split, when present) and provider."""

    image_id: str
    slide: Path
    mask: Path | None
    provider: str
    level: int | None  # None for --level auto (resolved over all slides afterwards)


def _inspect(job: SlideJob) -> dict[str, Any]:
    """Header facts of one slide and its mask; raises DataError for a slide problem that stops ``tile``.

    Mask problems are returned (``problems``: (path, problem, blocking)) so that they name the mask file.
    """
    with open_slide(job.slide) as slide:
        info: dict[str, Any] = {"levels": slide.level_count, "dims": list(slide.level_dimensions),
                                "downsamples": list(slide.level_downsamples), "problems": []}
        if job.level is not None and (problem := level_problem(info["levels"], job.level)) is not None:
            raise DataError(job.slide, problem)  # before the probe: tile too stops on the level first
        _probe(slide)
    if job.mask is not None:
        info["problems"], info["labels"] = _inspect_mask(job, info["dims"][0])
    return info


def _probe(slide: SlideReader) -> None:
    """Decode one small region of the coarsest level: a header can be fine over corrupt tile data
    (OpenSlide's ``openslide-unreadable.svs``), which ``tile`` stops on."""
    level = slide.level_count - 1
    width, height = slide.level_dimensions[level]
    ds = slide.level_downsamples[level]
    side = min(16, width, height)
    slide.read_region(int((width - side) // 2 * ds), int((height - side) // 2 * ds), level, side, side)


def _inspect_mask(job: SlideJob, slide_size: tuple[int, int]) -> tuple[list[tuple[str, str, bool]], list[int]]:
    """(problems of the mask file, its label values read from the coarsest level)."""
    assert job.mask is not None
    path, problems = str(job.mask), []
    try:
        with open_slide(job.mask, labels=True) as mask:
            size = tuple(mask.level_dimensions[0])
            if job.level is not None and job.level >= mask.level_count:
                problems.append((path, f"has {mask.level_count} level(s), --level {job.level} asked for", True))
            coarsest = mask.level_count - 1
            width, height = mask.level_dimensions[coarsest]
            labels = [] if width * height > MAX_LABEL_PIXELS else \
                np.unique(mask.read_level(coarsest, fill=0)[..., 0]).tolist()
    except DataError as err:
        return [(path, err.problem, True)], []
    if size != tuple(slide_size):
        problems.append((path, f"level 0 is {size[0]}×{size[1]} px, its slide {slide_size[0]}×{slide_size[1]} px"
                               " (tile would cut misaligned masks)", False))
    if labels and (problem := mask_label_problem(int(max(labels)), job.provider)) is not None:
        problems.append((path, problem, True))
    return problems, labels


def _read_metadata(report: CheckReport, path: Path, graded: bool) -> Any:
    """train.csv/test.csv rows (None when unreadable), every row problem added to ``report``."""
    try:
        frame = read_csv(path, required=TRAIN_COLUMNS if graded else TEST_COLUMNS,
                         dtype={"image_id": str, "gleason_score": str} if graded else {"image_id": str})
    except DataError as err:
        report.add(path, err.problem)
        return None
    problems, inconsistent = row_problems(frame, graded)
    for problem in problems:
        report.add(path, problem)
    for image_id in inconsistent:
        row = int((frame["image_id"] == image_id).to_numpy().argmax())
        report.add(path, f"row {row + 2}: gleason_score {frame['gleason_score'].iloc[row]} means ISUP"
                         f" {gleason_to_isup(frame['gleason_score'].iloc[row])}, isup_grade is {frame['isup_grade'].iloc[row]}"
                         " (kept as given)", blocking=False)
    split = "train" if graded else "test"
    report.counts[f"{split}.csv rows"] = len(frame)
    for provider, n in frame["data_provider"].value_counts().sort_index().items():
        report.counts[f"{split} {provider}"] = int(n)
    if graded and not any(p for p in problems if "isup_grade" in p):
        for grade, n in frame["isup_grade"].value_counts().sort_index().items():
            report.counts[f"train ISUP {grade}"] = int(n)
    # slides are checked for the rows the readers accept (their problems are listed above)
    usable = frame["image_id"].notna() & ~frame["image_id"].duplicated() & frame["data_provider"].isin(PROVIDERS)
    return frame[usable & frame["image_id"].astype(str).str.fullmatch(PANDA_ID.pattern)]


def _slide_jobs(report: CheckReport, data: Path, frame: Any, split: str, level: int | None,
                skip_missing: bool) -> list[SlideJob]:
    """A job per slide on disk; missing slides become problems (warnings with ``skip_missing``)."""
    folder = data / f"{split}_images"
    if split == "test" and not folder.is_dir():
        if len(frame):
            report.add(folder, f"absent: the {len(frame)} test slide(s) are not checked (Kaggle hides them)",
                       blocking=False)
        return []
    jobs, missing = [], []
    for row in frame.itertuples(index=False):
        path = slide_path(data, split, row.image_id)
        if not path.is_file():
            missing.append(path)
            continue
        mask = mask_path(data, row.image_id) if split == "train" else None
        jobs.append(SlideJob(row.image_id, path, mask if mask is not None and mask.is_file() else None,
                             row.data_provider, level))
    how = " (skipped: --skip-missing)" if skip_missing else " (--skip-missing to skip it)"
    if len(missing) <= MAX_LISTED:
        for path in missing:
            report.add(path, f"slide listed in {split}.csv is missing{how}", blocking=not skip_missing)
    else:
        report.add(folder, f"{len(missing)} slides listed in {split}.csv are missing{how}, e.g."
                           f" {', '.join(p.name for p in missing[:3])}", blocking=not skip_missing)
    report.counts[f"{split} slides on disk"] = len(jobs)
    report.counts[f"{split} slides missing"] = len(missing)
    return jobs


def check_dataset(data: Path, level: int | str = 1, skip_missing: bool = False, workers: int = 0) -> CheckReport:
    """Check a PANDA dataset folder as ``tile --level LEVEL`` would read it (see the module docstring)."""
    data = Path(data)
    report = CheckReport("panda", data)
    fixed = None if level == "auto" else int(level)
    jobs: list[SlideJob] = []
    train = _read_metadata(report, data / "train.csv", graded=True)
    if train is not None:
        jobs += _slide_jobs(report, data, train, "train", fixed, skip_missing)
    if (data / "test.csv").is_file():
        test = _read_metadata(report, data / "test.csv", graded=False)
        if test is not None:
            jobs += _slide_jobs(report, data, test, "test", fixed, skip_missing)
    else:
        report.add(data / "test.csv", "not found: the test split is not checked", blocking=False)
    infos = check_each(jobs, _inspect, report, lambda job: job.slide, workers)
    _summarise(report, jobs, infos, level)
    _orphan_masks(report, data, set() if train is None else set(train["image_id"]))
    return report


def _summarise(report: CheckReport, jobs: list[SlideJob], infos: list[Any], level: int | str) -> None:
    """Counts and ranges of the slides that opened, their masks' problems, the level ``auto`` takes."""
    good = [(job, info) for job, info in zip(jobs, infos) if info is not None]
    for _, info in good:
        for path, problem, blocking in info["problems"]:
            report.add(path, problem, blocking)
    report.counts["slides readable"] = len(good)
    report.counts["train masks on disk"] = sum(job.mask is not None for job in jobs)
    report.ranges["levels"] = value_range(info["levels"] for _, info in good)
    report.ranges["level-0 width (px)"] = value_range(info["dims"][0][0] for _, info in good)
    report.ranges["level-0 height (px)"] = value_range(info["dims"][0][1] for _, info in good)
    report.ranges["level-1 downsample"] = value_range(
        round(info["downsamples"][1], 4) if info["levels"] > 1 else None for _, info in good)
    for provider in ("radboud", "karolinska"):
        labels = [v for job, info in good if job.provider == provider for v in info.get("labels", [])]
        if labels:
            report.ranges[f"{provider} mask labels"] = value_range(labels)
    if level == "auto" and good:
        used, _ = auto_level({job.slide.name: info["levels"] for job, info in good})
        report.ranges["tiling level (--level auto)"] = (used, used)


def _orphan_masks(report: CheckReport, data: Path, train_ids: set[str]) -> None:
    """Masks in train_label_masks/ whose id train.csv does not list (warnings; tile ignores them)."""
    folder = data / "train_label_masks"
    names = sorted(p.name for p in folder.glob("*_mask.tiff")) if folder.is_dir() else []
    orphans = [name for name in names if name[: -len("_mask.tiff")] not in train_ids]
    for name in orphans[:MAX_LISTED]:
        report.add(folder / name, "mask without a slide listed in train.csv (ignored by tile)", blocking=False)
    if len(orphans) > MAX_LISTED:
        report.add(folder, f"{len(orphans) - MAX_LISTED} more mask(s) without a train.csv row", blocking=False)
