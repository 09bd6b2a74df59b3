"""PANDA's official metric: quadratic weighted kappa over ISUP grades 0–5, and the submission checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv
from medchallenge.core.metrics import confusion_matrix, quadratic_weighted_kappa
from medchallenge.panda.data import check_image_ids

N_GRADES = 6


def qwk(truth: np.ndarray | list[int], pred: np.ndarray | list[int]) -> float:
    """Quadratic weighted kappa with labels 0–5 (PANDA's leaderboard metric).

    The organisers' call, ``cohen_kappa_score(weights="quadratic", labels=[0..5])``
    (DIAGNijmegen/panda-challenge, src/evaluation/metrics.py): NaN (undefined) when truth and
    prediction are all one and the same grade, 0.0 when each is one grade but they differ.
    """
    return quadratic_weighted_kappa(truth, pred, N_GRADES)


def cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """The pooled out-of-fold score of ``panda cv``: QWK of the graded OOF rows, as the organisers compute it.

    ``oof`` rows (a fold run's oof.csv): ``isup`` (truth), ``pred`` (the grade with the fold's
    tuned cut-offs, what ``predict --threshold auto`` submits), ``pred_fixed`` (the rounded score)
    and ``provider``. First key ``qwk`` (scikit-learn's quadratic kappa over labels 0–5 on the
    pooled grades); then the fixed-cut-off QWK, accuracy and QWK per provider. U-Net folds
    (rows with pixel counts) are scored by :func:`seg_cv_score`.
    """
    if any(str(c).startswith("px_") for c in oof.columns):
        return seg_cv_score(oof)
    truth = oof["isup"].astype(int).to_numpy()
    out = {"qwk": qwk(truth, oof["pred"].astype(int).to_numpy())}
    if "pred_fixed" in oof:
        out["qwk_fixed_cutoffs"] = qwk(truth, oof["pred_fixed"].astype(int).to_numpy())
    out["accuracy"] = float(np.mean(truth == oof["pred"].astype(int).to_numpy())) if len(truth) else float("nan")
    if "provider" in oof:
        for provider, rows in oof.groupby("provider"):
            out[f"qwk_{provider}"] = qwk(rows["isup"].astype(int).to_numpy(), rows["pred"].astype(int).to_numpy())
    return out


def seg_cv_score(oof: pd.DataFrame) -> dict[str, float]:
    """The pooled score of U-Net folds: their rows' pixel confusions summed, scored as ``evaluate --masks``.

    ``oof`` rows (segtrain's oof.csv): ``scheme``, ``provider`` and ``px_<truth>_<pred>`` pixel counts.
    First key ``dice`` (mean foreground Dice of the pooled pixels, the U-Net's monitored metric), then
    ``tumour_dice``, ``pixel_accuracy`` and ``dice_<provider>`` per provider.

    Raises:
        DataError: classifier and U-Net rows mixed, several label schemes, or provider-scheme rows of
            both providers (their labels do not mean the same).
    """
    from medchallenge.panda.labels import mask_scores

    columns = [c for c in oof.columns if str(c).startswith("px_")]
    k = int(round(len(columns) ** 0.5))
    if "pred" in oof.columns or oof[columns].isna().any().any() or k * k != len(columns):
        raise DataError("oof.csv", "classifier and U-Net folds mixed: pool the folds of one model")
    schemes, providers = sorted(set(oof["scheme"])), sorted(set(oof["provider"]))
    if len(schemes) != 1 or (schemes[0] == "provider" and len(providers) != 1):
        raise DataError("oof.csv", f"U-Net folds of schemes {schemes} and providers {providers}: their mask"
                                   " labels do not mean the same")

    def scores(rows: pd.DataFrame) -> dict[str, Any]:
        matrix = np.zeros((k, k), dtype=np.int64)
        for t in range(k):
            for q in range(k):
                matrix[t, q] = int(rows[f"px_{t}_{q}"].sum())
        return mask_scores(matrix, schemes[0], str(rows["provider"].iloc[0]))

    pooled = scores(oof)
    out = {"dice": pooled["mean_dice"], "tumour_dice": pooled["tumour_dice"],
           "pixel_accuracy": pooled["pixel_accuracy"]}
    for provider, rows in oof.groupby("provider"):
        out[f"dice_{provider}"] = scores(rows)["mean_dice"]
    return out


def _grades(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """The ``column`` as integers 0–5; anything else (text, 2.5, 7, empty) names its row."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 0) | (values > 5)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            path, f"row {row + 2}: {column} '{frame[column].iloc[row]}' for {frame['image_id'].iloc[row]} is not an integer 0–5"
        )
    return values.astype(int).to_numpy()


def _read_grades(path: Path, what: str) -> pd.DataFrame:
    """``image_id,isup_grade`` of a submission or a reference, checked (ids, then grades)."""
    frame = read_csv(path, required=["image_id", "isup_grade"], dtype={"image_id": str})
    if frame.empty:
        raise DataError(path, f"empty {what}: no rows under the header")
    check_image_ids(frame, path)
    frame["isup_grade"] = _grades(frame, "isup_grade", path)
    return frame


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read and check ``image_id,isup_grade``: rows present, PANDA ids once each, integer grades 0–5.

    Raises:
        DataError: an empty submission, a missing column, an empty, duplicate or non-PANDA id, a
            grade that is not an integer 0–5, naming the file and the row.
    """
    return _read_grades(Path(path), "submission")[["image_id", "isup_grade"]]


def evaluate_submission(predictions: str | Path, truth: str | Path, subset: bool = False) -> dict[str, Any]:
    """The scores of :func:`score_submission` (without its per-slide table)."""
    return score_submission(predictions, truth, subset)[0]


def score_submission(predictions: str | Path, truth: str | Path,
                     subset: bool = False) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score a submission against a reference CSV (``image_id,isup_grade[,data_provider]``).

    As the organisers' check (DIAGNijmegen/panda-challenge, src/evaluation/util.py), every
    reference id must have a prediction; with ``subset`` only the submitted ids are scored, on
    purpose (e.g. a validation fold against train.csv), and the result says so. An id in the
    submission but not in the reference is an error here (the organisers' code drops it).
    Undefined kappas (one grade on both sides, overall or for one provider) are NaN.

    Returns:
        (scores, one row per scored slide: image_id, [data_provider,] isup_grade_true, isup_grade_pred).
        Scores: ``{"qwk", "accuracy", "n", "n_reference", "subset", "qwk_by_provider",
        "accuracy_by_provider", "n_by_provider", "confusion_matrix"}`` (the matrix 6×6, rows truth,
        columns prediction; ``n`` ids scored of ``n_reference`` in the reference).

    Raises:
        DataError: a bad submission or reference, unknown ids, missing ids without ``subset``.
    """
    predictions, truth = Path(predictions), Path(truth)
    sub = read_submission(predictions)
    ref = _read_grades(truth, "reference")
    unknown = ~sub["image_id"].isin(set(ref["image_id"]))
    if unknown.any():
        row = int(unknown.to_numpy().argmax())
        raise DataError(predictions, f"row {row + 2}: image_id {sub['image_id'].iloc[row]} is not in the reference"
                                     f" {truth} ({int(unknown.sum())} such row(s))")
    missing = ref["image_id"][~ref["image_id"].isin(set(sub["image_id"]))]
    if len(missing) and not subset:
        raise DataError(predictions, f"does not contain a prediction for all cases in the reference {truth}:"
                                     f" {len(missing)} of {len(ref)} missing, e.g. {missing.iloc[0]}"
                                     " (--subset scores only the submitted ids)")
    merged = ref.merge(sub, on="image_id", suffixes=("_true", "_pred"), how="inner")
    y_true = merged["isup_grade_true"].to_numpy()
    y_pred = merged["isup_grade_pred"].to_numpy()
    result: dict[str, Any] = {
        "qwk": qwk(y_true, y_pred),
        "accuracy": float(np.mean(y_true == y_pred)),  # merged is never empty: both CSVs have rows
        "n": int(len(merged)),
        "n_reference": int(len(ref)),
        "subset": bool(len(missing)),
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
    columns = [c for c in ("image_id", "data_provider", "isup_grade_true", "isup_grade_pred") if c in merged.columns]
    return result, merged[columns]


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
    from medchallenge.panda.labels import class_names, mask_scores, n_classes, to_scheme
    from medchallenge.panda.masks import MaskFolder
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
    rows = []
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
        rows.append(_slide_row(image_id, provider, matrix, scheme))
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

    result: dict[str, Any] = {"scheme": scheme, "n_skipped_without_truth": skipped, "cases": pd.DataFrame(rows),
                              "providers": {p: scores(m, p, n_slides[p]) for p, m in sorted(counts.items())}}
    if scheme == "unified" and len(counts) > 1:
        result["all"] = scores(sum(counts.values()), "unified", sum(n_slides.values()))  # type: ignore[arg-type]
    return result


def _slide_row(image_id: str, provider: str, matrix: np.ndarray, scheme: str) -> dict[str, Any]:
    """One slide's line of the per-case table (NaN where a score is undefined on this slide)."""
    from medchallenge.panda.labels import mask_scores

    s = mask_scores(matrix, scheme, provider)
    return {"image_id": image_id, "data_provider": provider, "pixels": s["pixels"],
            "pixel_accuracy": s["pixel_accuracy"], "mean_dice": s["mean_dice"], "tumour_dice": s["tumour_dice"]}


def submission_report(predictions: Path, truth: Path, subset: bool, scratch: Path) -> Any:
    """The :class:`~medchallenge.core.report.EvaluationReport` of a submission (QWK; confusion-matrix plot).

    ``predictions`` is a CSV or a ``predict`` folder (its submission.csv, or its parts merged into
    ``scratch``).
    """
    from medchallenge.core.plots import plot_confusion_matrix
    from medchallenge.core.report import EvaluationReport
    from medchallenge.panda.submission import resolve_predictions

    result, cases = score_submission(resolve_predictions(predictions, scratch), truth, subset)
    summary = {k: v for k, v in result.items() if k != "n"}

    def plots(folder: Path) -> None:
        plot_confusion_matrix(result["confusion_matrix"], [str(g) for g in range(N_GRADES)],
                              folder / "confusion_matrix.png", title=f"ISUP grade (QWK {_fmt(result['qwk'])})")

    return EvaluationReport("panda", "quadratic weighted kappa", result["qwk"], result["n"], summary, cases, plots)


def mask_report(masks: Path, truth: Path) -> Any:
    """The report of a mask folder: headline = mean foreground Dice (pooled ``all``, else the only provider)."""
    from medchallenge.core.report import EvaluationReport

    seg = evaluate_masks(masks, truth)
    cases = seg.pop("cases")
    head = seg.get("all") or next(iter(seg["providers"].values()))
    if "all" not in seg and len(seg["providers"]) > 1:
        head = {"mean_dice": None}  # provider schemes differ: no pooled number, see per provider
    n = sum(p["n_slides"] for p in seg["providers"].values())
    return EvaluationReport("panda", "mean foreground Dice (masks)", head["mean_dice"], n, seg, cases)


def _fmt(value: float) -> str:
    return "undefined" if value != value else f"{value:.3f}"
