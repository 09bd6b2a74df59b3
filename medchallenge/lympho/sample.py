"""A small synthetic lymphocytosis dataset in the real layout.

Each image is a 224×224 smear: pink background with red cells and one lymphocyte at the centre.
Malignant patients' lymphocytes have larger, darker, more irregular nuclei and their lymphocyte
counts are higher (log-normal around 30 vs 8 ×10⁹/L), so both the images and the clinical data
carry signal. The CSV keeps the real quirks: an unnamed index column, DOBs in both ``M/D/YYYY`` and
``DD-MM-YYYY``, one lowercase gender ``f``. Test patients (LABEL −1) go to ``testset/``; their
labels to ``answers/test_labels.csv`` (the CSV's format), apart from the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medchallenge.core.io import atomic_path, write_csv


def draw_smear(malignant: bool, rng: np.random.Generator, size: int = 224, signal: float = 1.0) -> np.ndarray:
    """One smear image, H×W×3 uint8; ``signal`` (0–1) scales how far a malignant cell departs from a
    reactive one (1: the full difference, 0: none)."""
    m = signal if malignant else 0.0
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    image[:] = (236, 212, 214)
    for _ in range(int(rng.integers(6, 14))):  # red cells
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(14, 22)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (214, 150, 160)
    c = size / 2 + rng.normal(0, 4, 2)
    cell_r = rng.normal(40 + 8 * m, 4)
    image[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= cell_r**2] = (200, 190, 220)  # cytoplasm
    nucleus_r = rng.normal(24 + 10 * m, 3)
    angle = np.arctan2(yy - c[0], xx - c[1])
    wobble = 1 + (0.05 + 0.1 * m) * np.sin(int(rng.integers(3, 7)) * angle + rng.uniform(0, 6))
    nucleus = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= (nucleus_r * wobble) ** 2
    image[nucleus] = np.array((120, 70, 150)) - m * np.array((40, 30, 30))
    image += rng.normal(0, 6, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def _dob(rng: np.random.Generator, i: int) -> str:
    year, month, day = int(rng.integers(1925, 1990)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{month}/{day}/{year}" if i % 3 else f"{day:02d}-{month:02d}-{year}"


def write_sample_dataset(out: Path, n_patients: int = 32, seed: int = 0, min_images: int = 8, max_images: int = 24,
                         test_fraction: float = 0.25, signal: float = 1.0) -> dict[str, int]:
    """Write ``n_patients`` patients in the real layout (+ ``answers/test_labels.csv``).

    ``signal`` (0–1) scales both signals of a malignant patient, the cells' difference
    (:func:`draw_smear`) and the lymphocyte count's (log-normal median 8 → 8·(30/8)^signal ×10⁹/L):
    1 is the easy default, smaller values give a task a model does not always solve.
    """
    from PIL import Image

    out = Path(out)
    rng = np.random.default_rng(seed)
    n_test = max(2, int(round(n_patients * test_fraction)))
    rows = []
    for i in range(n_patients):
        malignant = bool(i % 3 != 0)  # about 2:1 as in the real data (113:50)
        count = float(np.round(rng.lognormal(np.log(8) + (np.log(30 / 8) * signal if malignant else 0.0), 0.5), 1))
        gender = "f" if i == 5 else ("M" if rng.random() < 0.55 else "F")
        rows.append({"ID": f"P{i + 1}", "LABEL": int(malignant), "GENDER": gender, "DOB": _dob(rng, i),
                     "LYMPH_COUNT": count})
    frame = pd.DataFrame(rows)
    order = rng.permutation(n_patients)
    test_idx = set(order[:n_test].tolist())
    for i, row in frame.iterrows():
        split = "testset" if i in test_idx else "trainset"
        folder = out / split / row["ID"]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(int(rng.integers(min_images, max_images + 1))):
            with atomic_path(folder / f"{k:06d}.jpg") as tmp:
                Image.fromarray(draw_smear(bool(row["LABEL"]), rng, signal=signal)).save(tmp, format="JPEG", quality=90)
    answers = frame.copy()
    frame.loc[list(test_idx), "LABEL"] = -1
    write_csv(out / "answers" / "test_labels.csv",
              answers.loc[sorted(test_idx)].reset_index().rename(columns={"index": ""}))
    write_csv(out / "clinical_annotation.csv", frame.reset_index().rename(columns={"index": ""}))
    return {"train": n_patients - n_test, "test": n_test}
