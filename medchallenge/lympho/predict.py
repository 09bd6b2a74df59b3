"""Submission: every test patient (LABEL −1) once, ``Id,Predicted`` (0/1) in the CSV's order.

``predict --out DIR`` writes ``DIR/submission.csv``. With ``--part K/N`` each array job writes
``DIR/submission.part-K-of-N.csv`` (every N-th patient); the part that finds all N parts written
merges them into ``DIR/submission.csv`` in the CSV's order, so the last job of an array leaves
the Kaggle file behind without a separate step (``evaluate --predictions DIR`` also reads the
parts). An output is redone unless the same checkpoint (by content hash) and the same options
made it (``OUT/.manifest``); ``--overwrite`` redoes it anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_models
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.inference import mean_probabilities
from medchallenge.core.io import read_csv, write_csv
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.parts import complete_parts, merge_when_complete, part_path, select_part
from medchallenge.core.thresholds import resolve_threshold
from medchallenge.lympho.cache import load_image
from medchallenge.lympho.data import patient_images, read_annotations, warn_unlisted_folders
from medchallenge.lympho.models import MODELS
from medchallenge.lympho.train import clinical_matrix

SUBMISSION = "submission.csv"


def part_file(out: Path, part: str | None) -> Path:
    """``out/submission.csv``, or ``out/submission.part-K-of-N.csv`` for ``--part K/N``."""
    return part_path(Path(out) / SUBMISSION, part)


Member = tuple[torch.nn.Module, dict[str, Any]]
"""An ensemble member: the model and its checkpoint meta (clinical normalisation, crop, threshold)."""


def _clinical(todo: pd.DataFrame, meta: dict[str, Any]) -> np.ndarray:
    """B×F clinical features normalised as the member's training patients were."""
    return (clinical_matrix(todo, meta["clinical_features"]) - np.asarray(meta["clinical_mean"])) / np.asarray(
        meta["clinical_std"])


@torch.no_grad()
def _scores(members: list[Member], data: Path, todo: pd.DataFrame, dev: torch.device, batch_size: int,
            tta: bool = False) -> list[float]:
    """P(malignant) per patient, averaged over the members (and the 8 dihedral views of every image with
    ``tta``); ``batch_size`` patients per forward pass (their images flat)."""
    crop = members[0][1]["crop"]  # the same for every member (load_models' same_meta)
    clinical = [_clinical(todo, meta) for _, meta in members]
    dtype = amp_dtype(dev)
    rows = list(todo.itertuples())
    scores: list[float] = []
    for start in console.track(range(0, len(rows), batch_size), "predict"):
        chunk = rows[start : start + batch_size]
        bags_images = [np.stack([load_image(f, crop) for f in patient_images(data, r.ID, r.LABEL)]) for r in chunk]
        images = torch.from_numpy(np.concatenate(bags_images)).to(dev)
        bags = torch.cat([torch.full((len(b),), k, dtype=torch.long) for k, b in enumerate(bags_images)]).to(dev)
        forwards = [_forward(model, bags, torch.as_tensor(c[start : start + len(chunk)], dtype=torch.float32,
                                                          device=dev)) for (model, _), c in zip(members, clinical)]
        with autocast(dev, dtype):
            probs = mean_probabilities(forwards, images, tta=tta, views=8, activation="sigmoid")
        scores.extend(probs.float().cpu().tolist())
    return scores


def _forward(model: torch.nn.Module, bags: torch.Tensor, clinical: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """images N×3×C×C → the patients' logits (B,): a view of the images keeps each image's patient."""
    return lambda images: model(images, bags, clinical)["logit"]


def predict_submission(checkpoint: Path | Sequence[Path], data: Path, out: Path, device: str = "auto",
                       with_scores: bool = False, split: str = "test", part: str | None = None,
                       overwrite: bool = False, batch_size: int = 8, tta: bool = False,
                       threshold: str = "auto") -> pd.DataFrame | None:
    """Predict the test patients (``split="all"``: every patient) into the folder ``out``.

    ``checkpoint``: one or several (an ensemble: probabilities averaged); ``tta``: also average the 8
    dihedral views of every image; ``threshold``: ``auto`` (the members' tuned thresholds, averaged)
    or a number. Returns the written rows, or None when the output was already made by these
    checkpoints with these options (skipped; a skipped part still merges the parts when all are
    there). An output made by another checkpoint or other options is redone.
    """
    data, target = Path(data), part_file(out, part)
    frame = read_annotations(data / "clinical_annotation.csv")
    everyone = frame[frame["LABEL"] == -1] if split == "test" else frame
    files = expand_checkpoints([checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint))
    # what changes the output (not --batch-size, --device, --part); "auto" is fixed by the checkpoints
    options = {"scores": with_scores, "split": split, "tta": tta, "threshold": str(threshold)}
    manifest = PredictionManifest(out, files, options)
    result = None
    if not manifest.pending([target.name], [target.exists()], overwrite):
        console.log(f"{target} was made by this checkpoint with these options: skipped (--overwrite redoes it)")
    else:
        warn_unlisted_folders(data, frame)
        result = _predict_part(files, data, everyone.iloc[select_part(list(range(len(everyone))), part)],
                               device, with_scores, batch_size, tta, threshold)
        write_csv(target, result)
        manifest.record(target.name)
        console.log(f"wrote {len(result)} prediction(s) to {target}")
    order = everyone["ID"].tolist()
    merge_when_complete(Path(out) / SUBMISSION, part, lambda parts, dest: join_parts(parts, dest, order), manifest)
    return result


def _predict_part(files: list[Path], data: Path, todo: pd.DataFrame, device: str, with_scores: bool,
                  batch_size: int, tta: bool, threshold: str) -> pd.DataFrame:
    dev = resolve_device(device)
    members = [(model, payload["meta"]) for model, payload in
               load_models(files, MODELS, challenge="lympho", map_location=dev, same_meta=("crop",))]
    # one decision threshold for the averaged probability: the mean of the members' tuned ones
    cut = float(np.mean([resolve_threshold(threshold, meta, f, default=0.5) for f, (_, meta) in zip(files, members)]))
    console.log(f"{len(files)} model(s), decision threshold {cut:.4f}" + (", 8 dihedral views" if tta else ""))
    scores = _scores(members, data, todo, dev, batch_size, tta)
    result = pd.DataFrame({"Id": todo["ID"].tolist(), "Predicted": (np.asarray(scores) >= cut).astype(int)})
    if with_scores:
        result["Score"] = np.round(scores, 6)
    return result


def join_parts(parts: list[Path], target: Path, order: list[str] | None = None) -> None:
    """Write the rows of the part files to ``target``, in ``order`` of patient ids when given (the CSV's).

    Raises:
        DataError: the parts do not cover every patient of ``order`` (stale files of another patient list).
    """
    merged = pd.concat([read_csv(f, required=["Id", "Predicted"], dtype={"Id": str}) for f in parts])
    if order is not None:
        merged = merged.set_index("Id").reindex(order).reset_index()
        if merged["Predicted"].isna().any():
            raise DataError(target.parent, "the submission parts do not cover every patient: rerun predict with"
                                           " --overwrite")
        merged["Predicted"] = merged["Predicted"].astype(int)
    write_csv(target, merged)


def submission_file(predictions: Path, scratch: Path | None = None) -> Path:
    """The submission a ``--predictions`` path names: a CSV, or predict's folder (its submission.csv).

    A folder holding only part files: all N joined into ``scratch/merged_submission.csv`` (the
    predictions folder may be shared or read-only), or the missing parts named (core.parts' rule).
    """
    predictions = Path(predictions)
    if not predictions.is_dir():
        return predictions
    if (predictions / SUBMISSION).is_file():
        return predictions / SUBMISSION
    parts = complete_parts(predictions / SUBMISSION)
    target = Path(scratch if scratch is not None else predictions) / "merged_submission.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    join_parts(parts, target)
    return target
