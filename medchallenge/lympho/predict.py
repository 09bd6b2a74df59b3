"""Submission: every test patient (LABEL −1) once, ``Id,Predicted`` (0/1) in the CSV's order.

``predict --out DIR`` writes ``DIR/submission.csv``. With ``--part K/N`` each array job writes
``DIR/submission.part-K-of-N.csv`` (every N-th patient); the part that finds all N parts written
merges them into ``DIR/submission.csv`` in the CSV's order, so the last job of an array leaves
the Kaggle file behind without a separate step (``evaluate --predictions DIR`` also reads the
parts). An output is redone unless the same checkpoint (by content hash) and the same options
made it (``OUT/.manifest``); ``--overwrite`` redoes it anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_model
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.io import read_csv, write_csv
from medchallenge.core.manifest import PredictionManifest
from medchallenge.core.parts import parse_part, select_part
from medchallenge.lympho.cache import load_image
from medchallenge.lympho.data import patient_images, read_annotations, warn_unlisted_folders
from medchallenge.lympho.models import MODELS
from medchallenge.lympho.train import clinical_matrix

SUBMISSION = "submission.csv"


def part_file(out: Path, part: str | None) -> Path:
    """``out/submission.csv``, or ``out/submission.part-K-of-N.csv`` for ``--part K/N``."""
    if part is None:
        return Path(out) / SUBMISSION
    k, n = parse_part(part)
    return Path(out) / f"submission.part-{k}-of-{n}.csv"


@torch.no_grad()
def _scores(model: torch.nn.Module, data: Path, todo: pd.DataFrame, meta: dict[str, Any], dev: torch.device,
            batch_size: int) -> list[float]:
    """P(malignant) per patient, ``batch_size`` patients per forward pass (their images flat)."""
    clinical = (clinical_matrix(todo, meta["clinical_features"]) - np.asarray(meta["clinical_mean"])) / np.asarray(
        meta["clinical_std"])
    dtype = amp_dtype(dev)
    rows = list(todo.itertuples())
    scores: list[float] = []
    for start in console.track(range(0, len(rows), batch_size), "predict"):
        chunk = rows[start : start + batch_size]
        bags_images = [np.stack([load_image(f, meta["crop"]) for f in patient_images(data, r.ID, r.LABEL)])
                       for r in chunk]
        images = torch.from_numpy(np.concatenate(bags_images)).to(dev)
        bags = torch.cat([torch.full((len(b),), k, dtype=torch.long) for k, b in enumerate(bags_images)]).to(dev)
        feats = torch.as_tensor(clinical[start : start + len(chunk)], dtype=torch.float32, device=dev)
        with autocast(dev, dtype):
            logit = model(images, bags, feats)["logit"]
        scores.extend(torch.sigmoid(logit.float()).cpu().tolist())
    return scores


def predict_submission(checkpoint: Path, data: Path, out: Path, device: str = "auto", with_scores: bool = False,
                       split: str = "test", part: str | None = None, overwrite: bool = False,
                       batch_size: int = 8) -> pd.DataFrame | None:
    """Predict the test patients (``split="all"``: every patient) into the folder ``out``.

    Returns the written rows, or None when the output was already made by this checkpoint with these
    options (skipped; a skipped part still merges the parts when all are there). An output made by
    another checkpoint or other options is redone.
    """
    data, target = Path(data), part_file(out, part)
    frame = read_annotations(data / "clinical_annotation.csv")
    everyone = frame[frame["LABEL"] == -1] if split == "test" else frame
    # what changes the output (not --batch-size, --device, --part)
    manifest = PredictionManifest(out, expand_checkpoints([checkpoint]), {"scores": with_scores, "split": split})
    result = None
    if not manifest.pending([target.name], [target.exists()], overwrite):
        console.log(f"{target} was made by this checkpoint with these options: skipped (--overwrite redoes it)")
    else:
        warn_unlisted_folders(data, frame)
        result = _predict_part(checkpoint, data, everyone.iloc[select_part(list(range(len(everyone))), part)],
                               device, with_scores, batch_size)
        write_csv(target, result)
        manifest.record(target.name)
        console.log(f"wrote {len(result)} prediction(s) to {target}")
    if part is not None:
        merge_parts(Path(out), everyone["ID"].tolist(), parse_part(part)[1], manifest)
    return result


def _predict_part(checkpoint: Path, data: Path, todo: pd.DataFrame, device: str, with_scores: bool,
                  batch_size: int) -> pd.DataFrame:
    dev = resolve_device(device)
    model, state = load_model(checkpoint, MODELS, challenge="lympho", map_location=dev)
    meta = state["meta"]
    scores = _scores(model, data, todo, meta, dev, batch_size)
    result = pd.DataFrame({"Id": todo["ID"].tolist(),
                           "Predicted": (np.asarray(scores) >= meta.get("threshold", 0.5)).astype(int)})
    if with_scores:
        result["Score"] = np.round(scores, 6)
    return result


def merge_parts(out: Path, order: list[str], n: int, manifest: PredictionManifest | None = None) -> Path | None:
    """Merge ``submission.part-*-of-N.csv`` into ``submission.csv`` (in ``order``) once all N exist.

    With a ``manifest``, only parts made by its checkpoint and options count (a stale part of an
    older model waits for its own job's rerun), and the merged file is recorded too.
    """
    files = [out / f"submission.part-{k}-of-{n}.csv" for k in range(1, n + 1)]
    if not all(f.is_file() for f in files):
        return None
    if manifest is not None and not all(manifest.made_here(f.name) for f in files):
        console.log(f"not merging {out / SUBMISSION} yet: some parts were made by another checkpoint or options")
        return None
    merged = pd.concat([read_csv(f, required=["Id", "Predicted"], dtype={"Id": str}) for f in files])
    merged = merged.set_index("Id").reindex(order).reset_index()
    if merged["Predicted"].isna().any():  # parts of another patient list (stale files of an older run)
        raise DataError(out, "the submission parts do not cover every patient: rerun predict with --overwrite")
    merged["Predicted"] = merged["Predicted"].astype(int)
    write_csv(out / SUBMISSION, merged)
    if manifest is not None:
        manifest.record(SUBMISSION)
    console.log(f"all {n} part(s) written: merged into {out / SUBMISSION}")
    return out / SUBMISSION


def submission_file(predictions: Path) -> Path:
    """The submission a ``--predictions`` path names: a CSV, or predict's folder (its submission.csv).

    A folder holding only parts says which are missing (predict merges them once all are written;
    rerunning any finished part merges them too, as it skips its own work).
    """
    predictions = Path(predictions)
    if not predictions.is_dir():
        return predictions
    if (predictions / SUBMISSION).is_file():
        return predictions / SUBMISSION
    parts = sorted(predictions.glob("submission.part-*-of-*.csv"))
    if not parts:
        raise DataError(predictions, f"no {SUBMISSION} (nor submission.part-K-of-N.csv files): run predict")
    n = int(parts[0].name.rsplit("-of-", 1)[1].removesuffix(".csv"))
    missing = [k for k in range(1, n + 1) if not (predictions / f"submission.part-{k}-of-{n}.csv").is_file()]
    raise DataError(predictions, f"no {SUBMISSION}: part(s) {', '.join(f'{k}/{n}' for k in missing) or 'none'}"
                                 " missing; run them (or rerun any part) to merge")
