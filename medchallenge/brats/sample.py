"""A small synthetic BraTS dataset: four MRI modalities and labels in the BraTS 2020/2021 layout.

A brain ellipsoid holds one tumour: edema (2) around an enhancing rim (4) around necrosis (1),
each with its own contrast in FLAIR, T1, T1ce and T2 (edema bright in FLAIR/T2, the rim bright in
T1ce, necrosis dark in T1/T1ce), plus noise and a per-case intensity scale — so per-volume
normalisation matters. Test cases' segmentations go to ``answers/<case>/<case>_seg.nii.gz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medchallenge.brats.data import BRATS2021, CONVENTIONS, MODALITIES
from medchallenge.core.nifti import Geometry, write_volume

#              brain  edema  necrosis  enhancing
CONTRAST = {"flair": (0.40, 1.00, 0.60, 0.70),
            "t1": (0.60, 0.45, 0.20, 0.50),
            "t1ce": (0.60, 0.50, 0.25, 1.25),
            "t2": (0.50, 0.90, 1.00, 0.70)}


def draw_case(size: int, n_slices: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(modalities 4×S×H×W float32, labels S×H×W uint8 in {0,1,2,4}), axial-first."""
    zz, yy, xx = np.ogrid[:n_slices, :size, :size]
    c = np.array([n_slices / 2, size / 2, size / 2])
    brain = ((zz - c[0]) / (n_slices * 0.7)) ** 2 + ((yy - c[1]) / (size * 0.42)) ** 2 + ((xx - c[2]) / (size * 0.36)) ** 2 <= 1
    t = c + np.array([rng.uniform(-1, 1), rng.uniform(-0.12, 0.12) * size, rng.uniform(-0.12, 0.12) * size])
    r = np.sqrt(((zz - t[0]) * size / n_slices / 2.0) ** 2 + (yy - t[1]) ** 2 + (xx - t[2]) ** 2)
    scale = size / 48
    r_edema, r_rim, r_core = rng.uniform(8, 11) * scale, rng.uniform(4.5, 6) * scale, rng.uniform(2, 3.2) * scale
    labels = np.zeros((n_slices, size, size), np.uint8)
    labels[(r <= r_edema) & brain] = 2
    labels[(r <= r_rim) & brain] = 4
    labels[(r <= r_core) & brain] = 1
    region = np.zeros(labels.shape, np.int64)  # 0 outside, 1 brain, 2 edema, 3 necrosis, 4 enhancing
    region[brain] = 1
    region[labels == 2], region[labels == 1], region[labels == 4] = 2, 3, 4
    images = np.zeros((4, *labels.shape), np.float32)
    for k, name in enumerate(MODALITIES):
        lut = np.array([0.0, *CONTRAST[name]], np.float32)
        gain = rng.uniform(0.7, 1.4) * 600
        images[k] = lut[region] * gain + rng.normal(0, 0.06 * gain, labels.shape) * (region > 0)
    return images.clip(0, None), labels


def write_sample_dataset(out: Path, n_cases: int = 10, size: int = 48, n_slices: int = 10, seed: int = 0,
                         test_fraction: float = 0.3, prefix: str | None = None,
                         naming: str = BRATS2021.name) -> dict[str, int]:
    """Write ``n_cases`` cases under ``out`` (+ ``out/answers`` for the test cases' segmentations).

    ``naming`` "brats2021": ``BraTS20_Training_NNN/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``, labels
    {0,1,2,4}; "brats2023": ``BraTS-GLI-NNNNN-000/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``, labels {0,1,2,3}.
    """
    out = Path(out)
    conv = CONVENTIONS[naming]
    label_of_class = np.zeros(5, np.uint8)
    for value, cls in conv.class_of_label.items():
        label_of_class[cls] = value
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n_cases * test_fraction)))
    geometry = Geometry(size=(size, size, n_slices), spacing=(1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0),
                        direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    for i in range(n_cases):
        name = (f"{prefix or 'BraTS20_Training'}_{i + 1:03d}" if naming == BRATS2021.name
                else f"{prefix or 'BraTS-GLI'}-{i + 1:05d}-000")
        images, labels = draw_case(size, n_slices, rng)
        for k, suffix in enumerate(conv.files):  # conv.files follow MODALITIES' channel order
            write_volume(out / name / f"{name}{conv.separator}{suffix}.nii.gz", images[k].astype(np.int16), geometry)
        seg_folder = out / "answers" / name if i >= n_cases - n_test else out / name
        write_volume(seg_folder / f"{name}{conv.separator}seg.nii.gz", label_of_class[labels], geometry)
    return {"train": n_cases - n_test, "test": n_test}
