"""PANDA's official metric: quadratic weighted kappa over ISUP grades 0–5, and the submission checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.metrics import confusion_matrix, quadratic_weighted_kappa

N_GRADES = 6


def qwk(truth: np.ndarray | list[int], pred: np.ndarray | list[int]) -> float:
    """Quadratic weighted kappa with labels 0–5 (PANDA's leaderboard metric)."""
    return quadratic_weighted_kappa(truth, pred, N_GRADES)


def _grades(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 0) | (values > 5)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            path, f"row {row + 2}: {column} '{frame[column].iloc[row]}' for {frame['image_id'].iloc[row]} is not an integer 0–5"
        )
    return values.astype(int).to_numpy()


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read and check ``image_id,isup_grade`` (no duplicates, integer grades 0–5)."""
    path = Path(path)
    frame = read_csv(path, required=["image_id", "isup_grade"], dtype={"image_id": str})
    dup = frame["image_id"][frame["image_id"].duplicated()]
    if len(dup):
        raise DataError(path, f"duplicate image_id {dup.iloc[0]} ({len(dup)} duplicate row(s))")
    frame["isup_grade"] = _grades(frame, "isup_grade", path)
    return frame[["image_id", "isup_grade"]]


def evaluate_submission(predictions: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score a submission against a truth CSV (train.csv or any ``image_id,isup_grade[,data_provider]``).

    The truth may hold more ids than the submission; only submitted ids are scored. Ids in the
    submission but not in the truth are an error.

    Returns:
        ``{"qwk", "accuracy", "n", "qwk_by_provider", "accuracy_by_provider", "n_by_provider",
        "confusion_matrix"}`` (the matrix 6×6, rows truth, columns prediction).
    """
    predictions, truth = Path(predictions), Path(truth)
    sub = read_submission(predictions)
    ref = read_csv(truth, required=["image_id", "isup_grade"], dtype={"image_id": str})
    dup = ref["image_id"][ref["image_id"].duplicated()]
    if len(dup):
        raise DataError(truth, f"duplicate image_id {dup.iloc[0]}")
    ref["isup_grade"] = _grades(ref, "isup_grade", truth)
    unknown = sorted(set(sub["image_id"]) - set(ref["image_id"]))
    if unknown:
        raise DataError(
            predictions, f"{len(unknown)} image_id(s) not in the truth {truth.name}, e.g. {unknown[0]}"
        )
    merged = sub.merge(ref, on="image_id", suffixes=("_pred", "_true"), how="left")
    y_true = merged["isup_grade_true"].to_numpy()
    y_pred = merged["isup_grade_pred"].to_numpy()
    result: dict[str, Any] = {
        "qwk": qwk(y_true, y_pred),
        "accuracy": float(np.mean(y_true == y_pred)) if len(merged) else float("nan"),
        "n": int(len(merged)),
        "qwk_by_provider": {},
        "accuracy_by_provider": {},
        "n_by_provider": {},
        "confusion_matrix": confusion_matrix(y_true, y_pred, N_GRADES).tolist(),
    }
    if "data_provider" in merged.columns:
        for provider, group in merged.groupby("data_provider"):
            t, p = group["isup_grade_true"].to_numpy(), group["isup_grade_pred"].to_numpy()
            result["qwk_by_provider"][str(provider)] = qwk(t, p)
            result["accuracy_by_provider"][str(provider)] = float(np.mean(t == p))
            result["n_by_provider"][str(provider)] = int(len(group))
    return result


def evaluate_masks(masks: str | Path, truth: str | Path) -> dict[str, Any]:
    """Score a mask folder (``panda predict`` with a U-Net) against a tile cache's true mask tiles.

    Pixels of filler tiles (white padding outside the slide) are left out. Scores per provider,
    in the folder's label scheme, from pixel counts summed over all slides: per-class Dice
    ``2·TP / (|truth| + |pred|)`` (NaN for a class in neither), the mean over foreground classes,
    tumour Dice (Radboud's Gleason 3–5 merged, else label 2) and pixel accuracy. With the unified
    scheme, ``all`` pools both providers. Slides without true masks are skipped and counted.

    Raises:
        DataError: a slide of the folder missing from the cache, a mask tile of another size.
    """
    from medchallenge.panda.segment import MaskFolder, class_names, mask_scores, n_classes, to_scheme
    from medchallenge.panda.tiles import TileCache

    folder, cache = MaskFolder(masks), TileCache(truth)
    scheme = folder.scheme
    absent = sorted(folder.ids() - set(cache.index["image_id"]))
    if absent:
        raise DataError(Path(masks), f"{len(absent)} slide(s) not in the truth tile cache {truth}, e.g. {absent[0]}")
    with_truth = set(cache.with_masks())
    counts: dict[str, np.ndarray] = {}
    n_slides: dict[str, int] = {}
    skipped = 0
    for image_id, provider in zip(folder.index["image_id"], folder.index["data_provider"]):
        if image_id not in with_truth:
            skipped += 1
            continue
        slide = cache.load(image_id)
        pred = folder.load(image_id, slide.tiles.shape[:3])[~slide.fill]
        true = to_scheme(slide.masks, provider, scheme)[~slide.fill]  # type: ignore[arg-type]
        k = n_classes(scheme, provider)
        if pred.size and int(pred.max()) >= k:
            raise DataError(folder.file(image_id), f"label {int(pred.max())} outside the {scheme} scheme's 0–{k - 1}")
        matrix = np.bincount(true.astype(np.int64).ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)
        counts[provider] = counts.get(provider, 0) + matrix
        n_slides[provider] = n_slides.get(provider, 0) + 1
    if not counts:
        raise DataError(Path(truth), "no slide of the mask folder has true mask tiles in this cache")

    def scores(matrix: np.ndarray, provider: str, n: int) -> dict[str, Any]:
        s = mask_scores(matrix, scheme, provider)
        nan = lambda v: None if not np.isfinite(v) else float(v)  # noqa: E731
        return {"n_slides": n, "pixels": s["pixels"], "pixel_accuracy": s["pixel_accuracy"],
                "dice": {name: nan(d) for name, d in zip(class_names(scheme, provider), s["dice"])},
                "mean_dice": nan(s["mean_dice"]), "tumour_dice": nan(s["tumour_dice"]),
                "tumour_pixels": s["tumour_pixels"]}

    result: dict[str, Any] = {"scheme": scheme, "n_skipped_without_truth": skipped,
                              "providers": {p: scores(m, p, n_slides[p]) for p, m in sorted(counts.items())}}
    if scheme == "unified" and len(counts) > 1:
        result["all"] = scores(sum(counts.values()), "unified", sum(n_slides.values()))  # type: ignore[arg-type]
    return result
