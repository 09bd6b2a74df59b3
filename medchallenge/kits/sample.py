"""A small synthetic KiTS19 dataset in the real layout and header conventions.

Each case is an abdomen-like CT in HU: air (−1000) around a soft-tissue body (≈40 HU), a bright
spine (≈500 HU), a liver-like distractor (≈100 HU) and two contrast-enhanced kidneys (≈180 HU),
one or both carrying a tumour sphere that enhances less (≈70 HU) and is mottled. Files follow
KiTS19's conventions: the axial axis is the FIRST NIfTI/ITK axis (numpy arrays from SimpleITK
are rows×cols×slices), direction (0,0,1 / 0,1,0 / −1,0,0), slice thickness first in the spacing,
int16 HU imaging, uint8 labels — except one case whose labels are uint16, as nine real files are.
Training cases are numbered from 00000, test cases from 00210; the test cases' segmentations go
to ``answers/case_XXXXX/segmentation.nii.gz``, apart from the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medchallenge.core.nifti import Geometry, write_volume

KITS_DIRECTION = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)
THICKNESSES = (1.0, 2.5, 3.0, 5.0)


def _ellipsoid(shape: tuple[int, int, int], centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2
            + ((xx - centre[2]) / radii[2]) ** 2) <= 1.0


def draw_case(size: int, n_slices: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, labels uint8), both axial-first (slices × rows × cols)."""
    shape = (n_slices, size, size)
    hu = np.full(shape, -1000.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    mid = size / 2
    body = _ellipsoid(shape, (n_slices / 2, mid, mid), (n_slices * 2, size * 0.36, size * 0.45))
    hu[body] = 40
    hu[_ellipsoid(shape, (n_slices / 2, mid + size * 0.18, mid), (n_slices * 2, size * 0.06, size * 0.06))] = 500
    liver = _ellipsoid(shape, (n_slices * 0.35, mid - size * 0.05, mid - size * 0.22),
                       (n_slices * 0.4, size * 0.14, size * 0.12))
    hu[liver & body] = 100
    z0 = n_slices * rng.uniform(0.4, 0.6)
    sides = [-1, 1]
    tumour_sides = {int(rng.choice(sides))} if rng.random() < 0.7 else set(sides)
    for side in sides:
        centre = (z0 + rng.uniform(-1, 1), mid + size * 0.08, mid + side * size * 0.22)
        radii = (n_slices * rng.uniform(0.22, 0.3), size * rng.uniform(0.07, 0.09), size * rng.uniform(0.05, 0.07))
        kidney = _ellipsoid(shape, centre, radii)
        hu[kidney] = 180
        labels[kidney] = 1
        if side in tumour_sides:
            r = size * rng.uniform(0.04, 0.06)
            t_centre = (centre[0] + rng.uniform(-0.3, 0.3) * radii[0], centre[1] - radii[1] * 0.6,
                        centre[2] + side * radii[2] * 0.3)
            tumour = _ellipsoid(shape, t_centre, (max(r * n_slices / size * 3, 1.5), r, r))
            hu[tumour] = 70 + 25 * rng.standard_normal(int(tumour.sum()))
            labels[tumour] = 2
    hu += rng.normal(0, 12, shape).astype(np.float32)
    return np.clip(hu, -1024, 3071).astype(np.int16), labels


def write_case(folder: Path, hu: np.ndarray, labels: np.ndarray | None, spacing: tuple[float, float, float],
               label_dtype: type = np.uint8) -> Geometry:
    """Write ``imaging.nii.gz`` (+ ``segmentation.nii.gz``) from axial-first arrays, KiTS-style."""
    n, h, w = hu.shape
    geometry = Geometry(size=(n, w, h), spacing=spacing, origin=(0.0, 0.0, 0.0), direction=KITS_DIRECTION)
    write_volume(folder / "imaging.nii.gz", np.moveaxis(hu, 0, 2), geometry)
    if labels is not None:
        write_volume(folder / "segmentation.nii.gz",
                     np.moveaxis(labels, 0, 2).astype(label_dtype), geometry)
    return geometry


def write_sample_dataset(out: Path, n_cases: int = 12, size: int = 96, seed: int = 0,
                         test_fraction: float = 0.25) -> dict[str, int]:
    """Write ``n_cases`` cases under ``out/data`` (+ ``out/answers`` for the test cases)."""
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n_cases * test_fraction)))
    n_train = n_cases - n_test
    numbers = list(range(n_train)) + list(range(210, 210 + n_test))
    for i, number in enumerate(numbers):
        thickness = float(rng.choice(THICKNESSES))
        n_slices = int(np.clip(round(60 / thickness), 12, 40))
        pixel = float(rng.uniform(0.7, 0.95))
        hu, labels = draw_case(size, n_slices, rng)
        case = f"case_{number:05d}"
        spacing = (thickness, pixel, pixel)
        label_dtype = np.uint16 if i == 1 else np.uint8
        if number < 210:
            write_case(out / "data" / case, hu, labels, spacing, label_dtype)
        else:
            write_case(out / "data" / case, hu, None, spacing)
            write_case(out / "answers" / case, hu, labels, spacing)
            (out / "answers" / case / "imaging.nii.gz").unlink()
    return {"train": n_train, "test": n_test}
