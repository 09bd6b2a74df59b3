"""Submission: every test patient (LABEL −1) once, ``Id,Predicted`` (0/1) in the CSV's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, autocast, resolve_device
from medchallenge.core.io import write_csv
from medchallenge.lympho.cache import load_image
from medchallenge.lympho.data import patient_images, read_annotations, warn_unlisted_folders
from medchallenge.lympho.models import MODELS, build_model
from medchallenge.lympho.train import clinical_matrix


@torch.no_grad()
def predict_submission(checkpoint: Path, data: Path, out: Path, device: str = "auto", with_scores: bool = False,
                       split: str = "test") -> pd.DataFrame:
    """Predict the test patients (``split="all"``: every patient) and write ``out`` atomically."""
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, challenge="lympho", models=MODELS)
    model = build_model(state["model"])
    load_state_dict_checked(model, state["state_dict"], checkpoint)
    model = model.to(dev).eval()
    meta = state["meta"]
    frame = read_annotations(Path(data) / "clinical_annotation.csv")
    warn_unlisted_folders(data, frame)
    todo = frame[frame["LABEL"] == -1] if split == "test" else frame
    clinical = (clinical_matrix(todo, meta["clinical_features"]) - np.asarray(meta["clinical_mean"])) / np.asarray(
        meta["clinical_std"])
    dtype = amp_dtype(dev)
    scores = []
    for k, row in enumerate(console.track(list(todo.itertuples()), "predict")):
        files = patient_images(data, row.ID, row.LABEL)
        images = torch.from_numpy(np.stack([load_image(f, meta["crop"]) for f in files])).to(dev)
        bags = torch.zeros(len(files), dtype=torch.long, device=dev)
        feats = torch.as_tensor(clinical[k : k + 1], dtype=torch.float32, device=dev)
        with autocast(dev, dtype):
            logit = model(images, bags, feats)["logit"]
        scores.append(float(torch.sigmoid(logit.float())[0]))
    result = pd.DataFrame({"Id": todo["ID"].tolist(),
                           "Predicted": (np.asarray(scores) >= meta.get("threshold", 0.5)).astype(int)})
    if with_scores:
        result["Score"] = np.round(scores, 6)
    write_csv(out, result)
    console.log(f"wrote {len(result)} prediction(s) to {out}")
    return result
