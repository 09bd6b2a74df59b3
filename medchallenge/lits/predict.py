"""``lits predict`` and ``lits evaluate``: whole slices, NIfTI on the input grid, per-case and global Dice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.brats.metrics import dice_from_counts, lits_case_counts
from medchallenge.brats.predict import load_model
from medchallenge.brats.train import segment_slices
from medchallenge.core import console
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError
from medchallenge.core.nifti import read_volume, write_volume
from medchallenge.core.parts import select_part
from medchallenge.lits.data import find_cases, read_ct
from medchallenge.lits.train import normalise_ct

SEG_RE = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")


def predict_lits(checkpoint: Path, data: Path, out: Path, device: str = "auto", batch_size: int = 8,
                 part: str | None = None, overwrite: bool = False, test_only: bool = True) -> list[Path]:
    """Write ``segmentation-N.nii`` (labels {0,1,2}, the volume's grid) per (test) volume."""
    dev = resolve_device(device)
    model, _ = load_model(checkpoint, "lits", dev, 1)
    cases = [c for c in find_cases(data) if c.test or not test_only]
    if not cases:
        raise DataError(data, "no test-volume-N.nii (use --all for the training volumes)")
    written = []
    for case in console.track(select_part(cases, part), "predict"):
        target = Path(out) / f"segmentation-{case.number}.nii"
        if target.exists() and not overwrite:
            continue
        volume = read_ct(case.volume)
        classes = segment_slices(model, normalise_ct(volume.axial_first()), dev, batch_size, amp_dtype(dev), [0, 1, 2])
        write_volume(target, volume.from_axial_first(classes), volume.geometry, compress=False)
        written.append(target)
    console.log(f"wrote {len(written)} prediction(s) to {out}")
    return written


def evaluate_lits(predictions: Path, truth: Path) -> dict[str, Any]:
    """Liver (label ≥ 1) and tumour (== 2) Dice per case (mean) and global (sums over cases)."""
    truth_files = {int(m.group(1)): p for p in sorted(Path(truth).glob("segmentation-*.nii*"))
                   if (m := SEG_RE.match(p.name))}
    if not truth_files:
        raise DataError(truth, "no segmentation-N.nii ground truth")
    pred_files = {int(m.group(1)): p for p in sorted(Path(predictions).glob("segmentation-*.nii*"))
                  if (m := SEG_RE.match(p.name))}
    numbers = sorted(set(pred_files) & set(truth_files))
    if not numbers:
        raise DataError(predictions, "no segmentation-N.nii matching the truth")
    totals = {"liver": np.zeros(3, np.int64), "tumor": np.zeros(3, np.int64)}
    rows = []
    for n in numbers:
        gt, pred = read_volume(truth_files[n]).array, read_volume(pred_files[n]).array
        if gt.shape != pred.shape:
            raise DataError(pred_files[n], f"shape {pred.shape} differs from the truth's {gt.shape}")
        counts = lits_case_counts(pred, gt)
        row: dict[str, Any] = {"case": f"segmentation-{n}"}
        for key, value in counts.items():
            totals[key] += value
            row[f"{key}_dice"] = dice_from_counts(*value, empty=1.0)
        rows.append(row)
    return {
        "liver_dice_per_case": float(np.mean([r["liver_dice"] for r in rows])),
        "liver_dice_global": dice_from_counts(*totals["liver"].tolist()),
        "tumor_dice_per_case": float(np.mean([r["tumor_dice"] for r in rows])),
        "tumor_dice_global": dice_from_counts(*totals["tumor"].tolist()),
        "n": len(rows), "cases": rows,
    }
