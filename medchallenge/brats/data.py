"""The BraTS layout: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]`` (BraTS 2020/2021 naming).

Labels 0 background, 1 necrosis / non-enhancing core, 2 edema, 4 enhancing tumour; regions
WT = {1, 2, 4}, TC = {1, 4}, ET = {4}. The channel order is fixed (:data:`MODALITIES`) and
recorded in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medchallenge.core.errors import DataError
from medchallenge.core.nifti import Volume, read_geometry, read_volume

MODALITIES = ("flair", "t1", "t1ce", "t2")
LABEL_VALUES = (0, 1, 2, 4)


@dataclass(frozen=True)
class BratsCase:
    """A case folder: its name, the four modality files and the segmentation (if present)."""

    name: str
    images: tuple[Path, ...]
    segmentation: Path | None


def _find(folder: Path, name: str, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        path = folder / f"{name}_{suffix}{ext}"
        if path.is_file():
            return path
    return None


def find_cases(data: str | Path, names: list[str] | None = None) -> list[BratsCase]:
    """Case folders under ``data`` holding ``<case>_flair`` etc. (sorted).

    Raises:
        DataError: no case, or a case missing a modality.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(data, "dataset folder not found")
    cases = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        if names is not None and folder.name not in names:
            continue
        found = {m: _find(folder, folder.name, m) for m in MODALITIES}
        if not any(found.values()):
            continue
        missing = [m for m, p in found.items() if p is None]
        if missing:
            raise DataError(folder, f"case {folder.name} lacks modality {', '.join(missing)}"
                                    f" (expected {folder.name}_{{{','.join(MODALITIES)}}}.nii[.gz])")
        cases.append(BratsCase(folder.name, tuple(found[m] for m in MODALITIES), _find(folder, folder.name, "seg")))
    if not cases:
        raise DataError(data, "no BraTS case folders (<case>/<case>_flair.nii.gz ...)")
    return cases


def check_brats_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """uint8 labels in {0, 1, 2, 4}; label 3 gets a hint about BraTS 2023 / MSD relabelling."""
    values = set(np.unique(labels).tolist())
    bad = sorted(values - set(LABEL_VALUES))
    if bad:
        hint = (" — label 3 looks like BraTS 2023 (3 = enhancing) or the MSD relabelling; map it to 4 first"
                if 3 in bad else "")
        raise DataError(path, f"labels {bad} outside {{0, 1, 2, 4}}{hint}")
    return labels.astype(np.uint8)


def read_case(case: BratsCase, with_labels: bool = True) -> tuple[np.ndarray, Volume, np.ndarray | None]:
    """(modalities C×S×H×W float32 axial-first, the FLAIR volume for its geometry, labels S×H×W or None)."""
    reference = read_volume(case.images[0], dtype=np.float32)
    channels = [reference.axial_first()]
    for path in case.images[1:]:
        volume = read_volume(path, dtype=np.float32)
        if not volume.geometry.same_grid(reference.geometry):
            raise DataError(path, f"grid differs from {case.images[0].name} (size {volume.geometry.size} vs"
                                  f" {reference.geometry.size})")
        channels.append(volume.axial_first())
    labels = None
    if with_labels and case.segmentation is not None:
        if not read_geometry(case.segmentation).same_grid(reference.geometry):
            raise DataError(case.segmentation, f"grid differs from {case.images[0].name}")
        labels = check_brats_labels(np.ascontiguousarray(read_volume(case.segmentation).axial_first()),
                                    case.segmentation)
    return np.stack(channels), reference, labels
