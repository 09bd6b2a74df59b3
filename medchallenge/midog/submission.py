"""Detection files: our pixel JSON and the grand-challenge "Multiple points" format (millimetres).

Two formats, told apart by their structure (never by the size of the numbers):

* points (ours): ``{file_name: [{"x": px, "y": px, "score": s}, ...]}``.
* grand-challenge: ``{file_name: {"type": "Multiple points", "points": [{"name": "mitotic figure" |
  "non-mitotic figure", "point": [x_mm, y_mm, 0], "probability": s}, ...], "version": {"major": 1,
  "minor": 0}}}``: each value is exactly what the MIDOG reference container
  (DeepMicroscopy/MIDOG_reference_docker ``process.py``) writes to ``mitotic-figures.json`` for one
  image. Coordinates are SimpleITK physical points, ``x_mm = x_px * spacing_mm`` (origin 0,
  identity direction), the spacing coming from the TIFF's resolution tags as SimpleITK reads them.
  Only points named "mitotic figure" (or without a name, the 2021 format) are detections, as in
  DeepMicroscopy/MIDOG_evaluation_docker ``evaluation.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.errors import DataError
from medchallenge.core.names import check_name

DEFAULT_SPACING_UM = 0.25
"""MIDOG 2021's pixel size (µm/px): its 30 px matching radius is the evaluation container's 7.5 µm."""

MITOTIC, NON_MITOTIC = "mitotic figure", "non-mitotic figure"
GC_TYPE = "Multiple points"
_MM_PER_UNIT = {2: 25.4, 3: 10.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre (1 = none)


def tiff_spacing_mm(path: Path) -> tuple[float, float] | None:
    """(x, y) pixel spacing in mm from the first page's resolution tags, as SimpleITK (the reference
    container's reader) derives it: 25.4/res for inches, 10/res for centimetres; None without a unit."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            if "XResolution" not in tags or "YResolution" not in tags:
                return None  # SimpleITK keeps its default spacing of 1 (pixels) then
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2  # TIFF default: inch
            xres, yres = (_rational(tags[k].value) for k in ("XResolution", "YResolution"))
    except (OSError, ValueError, ZeroDivisionError, tifffile.TiffFileError) as err:
        raise DataError(path, f"cannot read the TIFF resolution ({err})") from err
    if unit not in _MM_PER_UNIT or not (xres > 0 and yres > 0):
        return None
    return _MM_PER_UNIT[unit] / xres, _MM_PER_UNIT[unit] / yres


def _rational(value: Any) -> float:
    """A TIFF RATIONAL (numerator, denominator) or plain number as a float."""
    return value[0] / value[1] if isinstance(value, tuple) else float(value)


def image_spacing_mm(path: Path, fallback_um: float | None) -> tuple[tuple[float, float], str]:
    """(spacing in mm/px, where it came from): the TIFF's resolution, else ``fallback_um`` µm/px.

    Raises DataError when the TIFF has no resolution and no fallback is given.
    """
    spacing = tiff_spacing_mm(path)
    if spacing is not None:
        return spacing, "TIFF resolution"
    if fallback_um is None:
        raise DataError(path, "no pixel size in the TIFF (resolution tags): pass --spacing (µm per pixel)")
    return (fallback_um / 1000.0, fallback_um / 1000.0), f"--spacing {fallback_um} µm/px"


def gc_document(points: np.ndarray, scores: np.ndarray, cut: float, spacing_mm: tuple[float, float]) -> dict[str, Any]:
    """The reference container's per-image "Multiple points" document.

    ``points``: D×2 (x, y) px; ``scores``: D. Every candidate is written (the container keeps the
    sub-threshold ones for the mAP), named "mitotic figure" when ``score >= cut``.
    """
    sx, sy = spacing_mm
    return {"type": GC_TYPE,
            "points": [{"name": MITOTIC if s >= cut else NON_MITOTIC, "point": [float(x) * sx, float(y) * sy, 0],
                        "probability": float(s)} for (x, y), s in zip(points, scores)],
            "version": {"major": 1, "minor": 0}}


@dataclass
class Detections:
    """A parsed detections file: its format and, per image, the detections' (x, y) as D×2 floats
    (pixels for ``points``, millimetres for ``grand-challenge``; non-mitotic points dropped)."""

    path: Path
    format: str
    images: dict[str, np.ndarray]


def _number(value: Any, path: Path, where: str) -> float:
    # bool is an int in Python; a coordinate of true is no coordinate
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{where}: {value!r} is not a finite number")
    return float(value)


def _pixel_entry(entry: list, path: Path, name: str) -> np.ndarray:
    rows = []
    for k, det in enumerate(entry):
        where = f"detections of {name}[{k}]"
        if not isinstance(det, dict) or "x" not in det or "y" not in det:
            raise DataError(path, f"{where}: expected {{\"x\", \"y\", \"score\"}}, got {det!r:.80}")
        rows.append((_number(det["x"], path, f"{where}.x"), _number(det["y"], path, f"{where}.y")))
    return np.asarray(rows, dtype=float).reshape(-1, 2)


def _gc_entry(entry: dict, path: Path, name: str) -> np.ndarray:
    points = entry.get("points")
    if not isinstance(points, list):
        raise DataError(path, f"{name}: a \"Multiple points\" object needs a \"points\" list")
    rows = []
    for k, point in enumerate(points):
        where = f"{name}.points[{k}]"
        if not isinstance(point, dict) or not isinstance(point.get("point"), list) or len(point["point"]) < 2:
            raise DataError(path, f"{where}: expected {{\"name\", \"point\": [x, y, z], \"probability\"}}")
        label = point.get("name", MITOTIC)  # no name: the 2021 format, every point a detection
        if label not in (MITOTIC, NON_MITOTIC):
            raise DataError(path, f"{where}: name {label!r} is neither {MITOTIC!r} nor {NON_MITOTIC!r}")
        xy = (_number(point["point"][0], path, f"{where}.point[0]"), _number(point["point"][1], path, f"{where}.point[1]"))
        if "probability" in point:
            _number(point["probability"], path, f"{where}.probability")
        if label == MITOTIC:
            rows.append(xy)
    return np.asarray(rows, dtype=float).reshape(-1, 2)


def read_detections(path: Path) -> Detections:
    """Parse and check a detections file; the format is told by structure (list vs "Multiple points").

    Raises:
        DataError: not JSON, not an object keyed by image file name, an image name that is not a
            plain name, a mix of formats, a missing, NaN or non-numeric coordinate (naming the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON ({err})") from err
    if not isinstance(found, dict):
        raise DataError(path, f"expected an object {{image file name: detections}}, got a JSON {type(found).__name__}")
    if found.get("type") == GC_TYPE:
        raise DataError(path, "one \"Multiple points\" document without its image: write"
                              " {\"<file_name>.tiff\": <document>, ...}")
    formats, images = set(), {}
    for name, entry in found.items():
        check_name(name, path, what="image name (key)")
        if isinstance(entry, list):
            formats.add("points")
            images[name] = _pixel_entry(entry, path, name)
        elif isinstance(entry, dict):
            formats.add("grand-challenge")
            images[name] = _gc_entry(entry, path, name)
        else:
            raise DataError(path, f"{name}: expected a list of {{x, y, score}} or a \"Multiple points\" object")
    if len(formats) > 1:
        raise DataError(path, "mixes pixel lists and \"Multiple points\" objects: one format per file")
    return Detections(path, formats.pop() if formats else "points", images)
