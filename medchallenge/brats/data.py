"""The BraTS layouts: the 2020/2021 naming and the 2023+ naming, with their label conventions.

- ``brats2021``: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]``; labels 0, 1 necrosis /
  non-enhancing core, 2 edema, 4 enhancing tumour; WT = {1, 2, 4}, TC = {1, 4}, ET = {4}.
- ``brats2023``: ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (t2f = FLAIR, t1n = T1, t1c = T1ce,
  t2w = T2); labels 0, 1 NETC, 2 SNFH, 3 ET; WT = {1, 2, 3}, TC = {1, 3}, ET = {3}.

The channel order is fixed (FLAIR, T1, T1ce, T2 — :data:`MODALITIES`) whatever the naming, and
the model's classes are the 2021 label values (class index = label value, 3 unused), so a model
trained on either naming segments the other: 2023 label 3 (ET) is class 4 inside, and written
back as 3 (:func:`labels_to_classes`, :func:`classes_to_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medchallenge.core.errors import DataError
from medchallenge.core.names import check_name
from medchallenge.core.nifti import Geometry, Volume, read_geometry, read_volume

MODALITIES = ("flair", "t1", "t1ce", "t2")
"""Channel order of every cache and model (the 2021 names; 2023 files map onto them)."""
LABEL_VALUES = (0, 1, 2, 4)
"""The model's classes: the 2021 label values (class index = value)."""


@dataclass(frozen=True)
class Convention:
    """A BraTS naming and label convention."""

    name: str
    files: tuple[str, ...]  # file suffix of each channel of MODALITIES, in that order
    separator: str  # between the case name and the suffix
    labels: tuple[int, ...]  # label values a segmentation may hold
    regions: dict[str, tuple[int, ...]]  # "wt", "tc", "et" → label values
    class_of_label: dict[int, int]  # label value → the model's class index

    def pattern(self, case: str, suffix: str) -> str:
        return f"{case}{self.separator}{suffix}.nii[.gz]"


BRATS2021 = Convention("brats2021", ("flair", "t1", "t1ce", "t2"), "_", (0, 1, 2, 4),
                       {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}, {0: 0, 1: 1, 2: 2, 4: 4})
BRATS2023 = Convention("brats2023", ("t2f", "t1n", "t1c", "t2w"), "-", (0, 1, 2, 3),
                       {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}, {0: 0, 1: 1, 2: 2, 3: 4})
CONVENTIONS = {c.name: c for c in (BRATS2021, BRATS2023)}


@dataclass(frozen=True)
class BratsCase:
    """A case folder: its name, the four modality files (FLAIR, T1, T1ce, T2), the segmentation
    (if present) and the naming convention it follows."""

    name: str
    images: tuple[Path, ...]
    segmentation: Path | None
    convention: str = BRATS2021.name


def _find(folder: Path, name: str, separator: str, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        path = folder / f"{name}{separator}{suffix}{ext}"
        if path.is_file():
            return path
    return None


def case_in(folder: Path) -> BratsCase | None:
    """The case held by ``folder`` in either naming, None when it holds no modality file.

    Raises:
        DataError: the folder mixes the two namings, lacks a modality, or is not a plain name.
    """
    found = {}
    for conv in CONVENTIONS.values():
        files = {s: _find(folder, folder.name, conv.separator, s) for s in conv.files}
        if any(files.values()):
            found[conv.name] = files
    if not found:
        return None
    if len(found) > 1:
        raise DataError(folder, f"case {folder.name} mixes the 2021 (<case>_flair) and 2023 (<case>-t2f) namings")
    (conv_name, files), = found.items()
    conv = CONVENTIONS[conv_name]
    missing = [s for s, p in files.items() if p is None]
    if missing:
        raise DataError(folder, f"case {folder.name} lacks modality {', '.join(missing)}"
                                f" (expected {conv.pattern(folder.name, '{' + ','.join(conv.files) + '}')})")
    check_name(folder.name, folder.parent, what="case folder")
    seg = _find(folder, folder.name, conv.separator, "seg")
    return BratsCase(folder.name, tuple(files[s] for s in conv.files), seg, conv.name)  # type: ignore[misc]


def find_cases(data: str | Path, names: list[str] | None = None) -> list[BratsCase]:
    """Case folders under ``data`` in the 2021 or the 2023 naming (sorted by name).

    Raises:
        DataError: no case, a case missing a modality, or one mixing the two namings.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(data, "dataset folder not found")
    cases = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        if names is not None and folder.name not in names:
            continue
        case = case_in(folder)
        if case is not None:
            cases.append(case)
    if not cases:
        raise DataError(data, "no BraTS case folders (<case>/<case>_flair.nii.gz ... or <case>/<case>-t2f.nii.gz ...)")
    return cases


def find_truth(folder: str | Path) -> dict[str, tuple[Path, str]]:
    """Ground truth under ``folder``: case name → (segmentation file, convention name).

    ``<case>/<case>_seg.nii[.gz]`` is 2021, ``<case>/<case>-seg.nii[.gz]`` is 2023.
    """
    found: dict[str, tuple[Path, str]] = {}
    for conv in CONVENTIONS.values():
        for path in sorted(Path(folder).glob(f"*/*{conv.separator}seg.nii*")):
            case = path.parent.name
            if path.name not in (f"{case}{conv.separator}seg.nii", f"{case}{conv.separator}seg.nii.gz"):
                continue
            check_name(case, folder, what="case folder")
            if case in found:
                raise DataError(path, f"second ground truth for case {case} (also {found[case][0].name})")
            found[case] = (path, conv.name)
    return dict(sorted(found.items()))


def check_labels(labels: np.ndarray, path: Path, convention: str) -> None:
    """Refuse labels outside the convention's set, naming the file and the labels.

    A label outside the set (3 in a 2021 file, 4 in a 2023 file, a stray 7, a fraction) is never
    scored silently as background.
    """
    conv = CONVENTIONS[convention]
    values = np.unique(labels)
    bad = sorted(v for v in values.tolist() if v not in conv.labels)
    if not bad:
        return
    shown = ", ".join(f"{v:g}" for v in bad[:8])
    hint = ""
    if conv is BRATS2021 and 3 in bad:
        hint = (" — label 3 is enhancing tumour in BraTS 2023 (and the MSD relabelling): name the case the 2023 way"
                " (<case>-t1c.nii.gz ...) or relabel 3 → 4")
    elif conv is BRATS2023 and 4 in bad:
        hint = " — label 4 is the BraTS 2021 enhancing tumour; the 2023 naming expects 3"
    allowed = "{" + ", ".join(str(v) for v in conv.labels) + "}"
    raise DataError(path, f"labels [{shown}] outside {allowed} of the {convention} convention{hint}")


def labels_to_classes(labels: np.ndarray, convention: str) -> np.ndarray:
    """Label values of ``convention`` (checked) → the model's class indices (uint8, same shape)."""
    table = np.zeros(max(CONVENTIONS[convention].labels) + 1, np.uint8)
    for value, cls in CONVENTIONS[convention].class_of_label.items():
        table[value] = cls
    return table[labels.astype(np.int64)]


def classes_to_labels(classes: np.ndarray, convention: str) -> np.ndarray:
    """The model's class indices (0, 1, 2, 4) → label values of ``convention`` (uint8)."""
    table = np.zeros(max(LABEL_VALUES) + 1, np.uint8)
    for value, cls in CONVENTIONS[convention].class_of_label.items():
        table[cls] = value
    return table[classes.astype(np.int64)]


def read_labels(path: Path, convention: str) -> np.ndarray:
    """A segmentation's labels (SimpleITK array order, uint8), checked against ``convention``."""
    labels = read_volume(path).array
    check_labels(labels, path, convention)
    return labels.astype(np.uint8)


def check_grid(path: Path, geometry: Geometry, reference: Path, reference_geometry: Geometry) -> None:
    """Refuse a file whose grid (size, spacing, origin, direction) is not that of the case's FLAIR."""
    if not geometry.same_grid(reference_geometry):
        raise DataError(path, f"grid differs from {reference.name} (size {geometry.size} vs"
                              f" {reference_geometry.size})")


def read_case(case: BratsCase, with_labels: bool = True) -> tuple[np.ndarray, Volume, np.ndarray | None]:
    """(modalities C×S×H×W float32 axial-first, the FLAIR volume for its geometry — its array
    dropped, so only the stack holds voxels —, class indices S×H×W uint8 in {0, 1, 2, 4} or None)."""
    reference = read_volume(case.images[0], dtype=np.float32)
    first = reference.axial_first()
    # one C×S×H×W float32 array filled channel by channel: the only whole copy of the case in memory
    images = np.empty((len(case.images), *first.shape), np.float32)
    images[0] = first
    reference = Volume(np.empty((0,) * first.ndim, np.float32), reference.geometry, reference.path)  # geometry only
    del first
    for k, path in enumerate(case.images[1:], start=1):
        volume = read_volume(path, dtype=np.float32)
        check_grid(path, volume.geometry, case.images[0], reference.geometry)
        images[k] = volume.axial_first()
        del volume
    classes = None
    if with_labels and case.segmentation is not None:
        check_grid(case.segmentation, read_geometry(case.segmentation), case.images[0], reference.geometry)
        labels = np.moveaxis(read_labels(case.segmentation, case.convention), reference.axial_axis, 0)
        classes = np.ascontiguousarray(labels_to_classes(labels, case.convention))
    return images, reference, classes
