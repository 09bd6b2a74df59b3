"""MIDOG.json and the image folder: typed records, scanners, a listed validation split.

``MIDOG.json``: ``images`` {file_name, id, width, height}; ``categories`` 1 "mitotic figure",
2 "not mitotic figure" (imposters); ``annotations`` {bbox, category_id, image_id, id} with bbox
``[x1, y1, x2, y2]`` (not COCO's xywh), 50×50 around the cell, some on half pixels, some crossing
the image border. A figure's centre is its box's UNCLIPPED centre ``((x1+x2)/2, (y1+y2)/2)``: that is
where the organisers' database puts it and what the official scorer matches against (clipping
would move 13 real border mitoses by 1–6.5 px). Scanners by image id: 1–50 Hamamatsu XR, 51–100 Hamamatsu S360,
101–150 Aperio CS2, 151–200 Leica GT450 (no annotations in the release).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.names import check_name

MITOSIS, IMPOSTER = 1, 2
SCANNERS = ((1, 50, "Hamamatsu XR"), (51, 100, "Hamamatsu S360"), (101, 150, "Aperio CS2"), (151, 200, "Leica GT450"))


def scanner_of(image_id: int) -> str:
    """The scanner of an image id (by the MIDOG 2021 numbering)."""
    for low, high, name in SCANNERS:
        if low <= image_id <= high:
            return name
    return "unknown"


@dataclass
class MidogImage:
    """One image: its file, size and annotation centres (N×2 float, x, y in px)."""

    image_id: int
    file_name: str
    width: int
    height: int
    mitoses: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    imposters: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    annotated: bool = False

    @property
    def scanner(self) -> str:
        return scanner_of(self.image_id)


def read_midog_document(path: str | Path) -> dict:
    """The parsed JSON object of MIDOG.json, with its ``images`` and ``annotations`` lists.

    Raises:
        DataError: a missing file, invalid JSON, not an object, or a missing key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object with 'images' and 'annotations', got a {type(data).__name__}")
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(path, f"missing key '{key}'")
        if not isinstance(data[key], list):
            raise DataError(path, f"'{key}' is not a list")
    return data


def parse_image_entry(k: int, entry: object, path: Path, seen: dict[int, str]) -> MidogImage:
    """``images[k]`` as a record; ``seen`` (id → file_name of the entries before) catches duplicates.

    Raises:
        DataError: a missing or non-numeric field, a file_name that is not a plain name, an id or
            file_name given twice (a second entry would silently replace the first).
    """
    try:
        image_id, name = int(entry["id"]), entry["file_name"]  # type: ignore[index]
        width, height = int(entry["width"]), int(entry["height"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(path, f"images[{k}]: needs file_name, id, width, height ({err})") from err
    # file_name is joined onto the data folder by every command
    name = check_name(name, path, what="file_name", where=f"images[{k}]")
    if width < 1 or height < 1:
        raise DataError(path, f"images[{k}] ({name}): size {width}×{height} px")
    if image_id in seen:
        raise DataError(path, f"images[{k}]: id {image_id} is also {seen[image_id]}'s id")
    if name in seen.values():
        raise DataError(path, f"images[{k}]: file_name {name} is listed twice")
    seen[image_id] = name
    return MidogImage(image_id, name, width, height)


def parse_annotation(k: int, ann: object, path: Path, image_ids: set[int] | dict) -> tuple[int, int, np.ndarray]:
    """``annotations[k]`` → (image id, category, box ``[x1, y1, x2, y2]`` as 4 floats).

    Raises:
        DataError: not a bbox of four numbers with x2 > x1 and y2 > y1, an unknown image or category.
    """
    try:
        box = np.asarray([float(v) for v in ann["bbox"]], dtype=float)  # type: ignore[index]
        image_id, category = int(ann["image_id"]), int(ann["category_id"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(path, f"annotations[{k}]: needs bbox [x1,y1,x2,y2], category_id, image_id ({err})") from err
    ident = ann.get("id") if isinstance(ann, dict) else None
    if len(box) != 4 or not np.isfinite(box).all():
        raise DataError(path, f"annotations[{k}] (id {ident}): bbox {ann['bbox']} is not four finite numbers")  # type: ignore[index]
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise DataError(path, f"annotations[{k}] (id {ident}): bbox {ann['bbox']} is not [x1, y1, x2, y2]"  # type: ignore[index]
                              " with x2 > x1 and y2 > y1 (COCO xywh?)")
    if image_id not in image_ids:
        raise DataError(path, f"annotations[{k}]: image_id {image_id} is not in 'images'")
    if category not in (MITOSIS, IMPOSTER):
        raise DataError(path, f"annotations[{k}]: unknown category_id {category}")
    return image_id, category, box


def load_midog_json(path: str | Path) -> dict[int, MidogImage]:
    """Parse MIDOG.json into images by id, each box turned into its unclipped centre (x, y px).

    Raises:
        DataError: unreadable JSON, missing keys, a file_name that is not a plain name, an image id
            or file_name given twice, a bbox that is not [x1, y1, x2, y2] with x2 > x1 and y2 > y1,
            an annotation of an unknown image or category.
    """
    path = Path(path)
    data = read_midog_document(path)
    images: dict[int, MidogImage] = {}
    seen: dict[int, str] = {}
    for k, entry in enumerate(data["images"]):
        img = parse_image_entry(k, entry, path, seen)
        images[img.image_id] = img
    centres: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for k, ann in enumerate(data["annotations"]):
        image_id, category, (x1, y1, x2, y2) = parse_annotation(k, ann, path, images)
        # no clipping to the image: the official centre of a border-crossing box is its own centre
        centres.setdefault((image_id, category), []).append(((x1 + x2) / 2, (y1 + y2) / 2))
    for image_id, img in images.items():
        img.mitoses = np.asarray(centres.get((image_id, MITOSIS), []), dtype=float).reshape(-1, 2)
        img.imposters = np.asarray(centres.get((image_id, IMPOSTER), []), dtype=float).reshape(-1, 2)
        img.annotated = len(img.mitoses) + len(img.imposters) > 0
    return images


def annotated_images(images: dict[int, MidogImage], data: Path | None = None) -> list[MidogImage]:
    """The annotated images (sorted by id); unannotated ones are named in a log line, not used.

    With ``data``, every kept image must exist on disk (DataError otherwise).
    """
    kept = [img for _, img in sorted(images.items()) if img.annotated]
    dropped = [img.image_id for _, img in sorted(images.items()) if not img.annotated]
    if dropped:
        console.log(f"{len(dropped)} image(s) without annotations excluded from training and evaluation"
                    f" (ids {dropped[0]}–{dropped[-1]})")
    if data is not None:
        for img in kept:
            if not (Path(data) / img.file_name).is_file():
                raise DataError(Path(data) / img.file_name, f"image {img.image_id} is annotated in MIDOG.json but missing")
    return kept


def val_ids_split(images: list[MidogImage], val_ids_file: Path) -> tuple[list[MidogImage], list[MidogImage]]:
    """(train, val) by the ids listed in ``val_ids_file`` (``train --val-ids``; the seeded splits and
    folds are the engine's ``Trainer.split_items``)."""
    try:
        wanted = {int(tok) for tok in Path(val_ids_file).read_text().replace(",", " ").split()}
    except (OSError, ValueError) as err:
        raise DataError(val_ids_file, f"expected image ids separated by spaces, commas or lines ({err})") from err
    unknown = wanted - {img.image_id for img in images}
    if unknown:
        raise DataError(val_ids_file, f"id(s) not among the annotated images: {sorted(unknown)[:5]}")
    return [i for i in images if i.image_id not in wanted], [i for i in images if i.image_id in wanted]
