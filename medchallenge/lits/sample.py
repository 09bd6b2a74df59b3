"""A small synthetic LiTS dataset: abdominal CT (signed HU) with a liver holding darker lesions.

The body is fatty tissue (−90 HU), the liver enhanced (110 HU), its lesions hypodense (15 HU), noise
10 HU. Lesions (1–3 per volume, radius 3.5–6 px at 48 px, about 1–3 slices) make 4–32% of the
liver: the demo's 1,024 patches learn them. The earlier sample (body 40 HU, lesions 55 HU of radius
2.5–4.5 px: about 43 voxels a volume, 1.5 noise sd from the body) gave the demo a tumour Dice of
0.01: every tumour voxel was called liver, and the tumour calls lay in the body.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medchallenge.core.nifti import Geometry, write_volume

LESION_HU = 15.0
BODY_HU = -90.0


def draw_case(size: int, n_slices: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, labels uint8 {0,1,2}), both slices × rows × cols."""
    zz, yy, xx = np.ogrid[:n_slices, :size, :size]
    hu = np.full((n_slices, size, size), -1000.0, np.float32)
    body = ((yy - size / 2) / (size * 0.42)) ** 2 + ((xx - size / 2) / (size * 0.46)) ** 2 <= 1
    hu[:, body[0]] = BODY_HU
    c = (n_slices / 2, size * rng.uniform(0.4, 0.5), size * rng.uniform(0.33, 0.4))
    radius = ((zz - c[0]) / (n_slices * 0.6)) ** 2 + ((yy - c[1]) / (size * 0.2)) ** 2 + ((xx - c[2]) / (size * 0.17)) ** 2
    liver = radius <= 1
    labels = np.zeros(hu.shape, np.uint8)
    hu[liver] = 110
    labels[liver] = 1
    # lesion centres inside the liver: one at its rim would be cut to a sliver (a 1–2-slice volume has no
    # inner half along z: then anywhere in the liver)
    points = np.argwhere(radius <= 0.5) if (radius <= 0.5).any() else np.argwhere(liver)
    for _ in range(int(rng.integers(1, 4))):
        t = points[rng.integers(len(points))]
        r = rng.uniform(3.5, 6.0) * size / 48
        lesion = ((zz - t[0]) * size / n_slices / 2) ** 2 + (yy - t[1]) ** 2 + (xx - t[2]) ** 2 <= r * r
        hu[lesion & liver] = LESION_HU
        labels[lesion & liver] = 2
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    return hu.astype(np.int16), labels


def write_sample_dataset(out: Path, n_cases: int = 8, size: int = 48, n_slices: int = 8, seed: int = 0,
                         test_fraction: float = 0.3) -> dict[str, int]:
    """``volume-N.nii`` + ``segmentation-N.nii`` (training), ``test-volume-N.nii`` (+ ``answers/test-segmentation-N.nii``,
    the name the prediction of ``test-volume-N.nii`` gets)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n_cases * test_fraction)))
    geometry = Geometry(size=(size, size, n_slices), spacing=(0.8, 0.8, 2.5), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    for i in range(n_cases):
        hu, labels = draw_case(size, n_slices, rng)
        if i < n_cases - n_test:
            write_volume(out / f"volume-{i}.nii", hu, geometry, compress=False)
            write_volume(out / f"segmentation-{i}.nii", labels, geometry, compress=False)
        else:
            write_volume(out / f"test-volume-{i}.nii", hu, geometry, compress=False)
            write_volume(out / "answers" / f"test-segmentation-{i}.nii", labels, geometry, compress=False)
    return {"train": n_cases - n_test, "test": n_test}
