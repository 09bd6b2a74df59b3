"""``midog check --data DIR``: MIDOG.json and the TIFF headers, checked without decoding an image.

What stops ``tile`` (and so is blocking, exit 2): no images, a MIDOG.json that ``load_midog_json``
refuses (every such entry is reported, not only the first), a TIFF the slide reader refuses, an
image whose size is not its MIDOG.json entry's. Warnings (``tile`` goes on): an image of
MIDOG.json without its file (``train`` stops on the annotated ones, ``predict`` does not need
them), a TIFF not in MIDOG.json, duplicate annotation ids or boxes, a box whose centre lies
outside its image (never matchable), boxes that are not 50×50, a TIFF without resolution tags
(grand-challenge millimetres then assume 0.25 µm/px), an unknown scanner. Boxes crossing the
image border with their centre inside (48 in the release) are fine and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.check import CheckReport, check_each, value_range
from medchallenge.core.errors import DataError
from medchallenge.midog.data import (
    IMPOSTER,
    MITOSIS,
    MidogImage,
    parse_annotation,
    parse_image_entry,
    read_midog_document,
    scanner_of,
)

BOX = 50.0  # the release's box side, px


@dataclass(frozen=True)
class TiffJob:
    """One TIFF to check (picklable for ``--workers``): its path and MIDOG.json's (width, height)."""

    path: Path
    size: tuple[int, int] | None


def tiff_header(job: TiffJob) -> dict[str, Any]:
    """The header of one TIFF through the readers ``tile`` uses (nothing decoded): size, levels,
    tiling, pixel size (µm, None without resolution tags), pages and dtype.

    Raises:
        DataError: a file the slide reader refuses, or a size other than MIDOG.json's.
    """
    import tifffile

    from medchallenge.core.wsi import open_slide
    from medchallenge.midog.submission import tiff_spacing_mm
    from medchallenge.midog.tiling import check_size

    with open_slide(job.path) as reader:
        check_size(reader, job.size)
        width, height = reader.level_dimensions[0]
        levels, tiled = len(reader.level_dimensions), reader.tiled
    spacing = tiff_spacing_mm(job.path)
    with tifffile.TiffFile(job.path) as tif:
        pages, dtype = len(tif.pages), str(tif.pages[0].dtype)
    return {"width": width, "height": height, "levels": levels, "tiled": tiled, "pages": pages, "dtype": dtype,
            "spacing_um": None if spacing is None else round(spacing[0] * 1000, 6)}


def check_dataset(data: Path, workers: int = 0) -> CheckReport:
    """Check the folder ``data`` (NNN.tiff + MIDOG.json) and return the report (counts, ranges, problems)."""
    data = Path(data)
    report = CheckReport("midog", data)
    if not data.is_dir():
        report.add(data, "not a folder")
        return report
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    report.counts["image files"] = len(files)
    if not files:
        report.add(data, "no .tiff images (tile stops)")
    images = _check_json(data / "MIDOG.json", report)
    by_name = {img.file_name: img for img in images.values()}
    if images:
        _pair(data, files, by_name, report)
    jobs = [TiffJob(f, (by_name[f.name].width, by_name[f.name].height) if f.name in by_name else None) for f in files]
    headers = [h for h in check_each(jobs, tiff_header, report, lambda job: job.path, workers) if h is not None]
    for f, h in zip(files, headers):
        if h["spacing_um"] is None:
            report.add(f, "no resolution tags: grand-challenge millimetres assume 0.25 µm/px (--spacing)", False)
    report.counts["tiled TIFFs"] = sum(h["tiled"] for h in headers)
    for key, label in (("width", "width (px)"), ("height", "height (px)"), ("spacing_um", "pixel size (µm)"),
                       ("levels", "levels"), ("pages", "TIFF pages")):
        report.ranges[label] = value_range(h[key] for h in headers)
    report.ranges["dtype"] = value_range(h["dtype"] for h in headers)
    return report


def _check_json(path: Path, report: CheckReport) -> dict[int, MidogImage]:
    """MIDOG.json entry by entry (every refused entry reported); the images it describes, by id."""
    if not path.is_file():
        report.add(path, "no MIDOG.json: train and evaluate need it (predict does not)", False)
        return {}
    try:
        document = read_midog_document(path)
    except DataError as err:
        report.add(path, err.problem)
        return {}
    images: dict[int, MidogImage] = {}
    seen: dict[int, str] = {}
    for k, entry in enumerate(document["images"]):
        try:
            img = parse_image_entry(k, entry, path, seen)
        except DataError as err:
            report.add(path, err.problem)
            continue
        images[img.image_id] = img
    boxes = _check_annotations(path, document["annotations"], images, report)
    for image_id, _, _ in boxes:
        images[image_id].annotated = True
    _check_categories(path, document.get("categories"), report)
    _count(path, images, boxes, report)
    return images


def _check_annotations(path: Path, annotations: list, images: dict[int, MidogImage],
                       report: CheckReport) -> list[tuple[int, int, np.ndarray]]:
    """Every annotation through the pipeline's parser, plus the warnings only a check gives."""
    boxes, ids, seen_boxes = [], Counter(), set()
    for k, ann in enumerate(annotations):
        try:
            image_id, category, box = parse_annotation(k, ann, path, images)
        except DataError as err:
            report.add(path, err.problem)
            continue
        ids[ann.get("id")] += 1
        key = (image_id, category, *box.round(3))
        if key in seen_boxes:
            report.add(path, f"annotations[{k}] (id {ann.get('id')}): the same box as an earlier annotation of"
                             f" image {image_id} (counted twice as a figure)", False)
        seen_boxes.add(key)
        img = images[image_id]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if not (0 <= cx <= img.width and 0 <= cy <= img.height):
            report.add(path, f"annotations[{k}] (id {ann.get('id')}): centre ({cx:g}, {cy:g}) outside image"
                             f" {image_id} ({img.width}×{img.height} px)", False)
        boxes.append((image_id, category, box))
    twice = sorted(str(i) for i, n in ids.items() if n > 1)
    if twice:
        report.add(path, f"{len(twice)} annotation id(s) used more than once: {', '.join(twice[:5])}", False)
    odd = [box for _, _, box in boxes if not np.allclose(box[2:] - box[:2], BOX)]
    if odd:
        report.add(path, f"{len(odd)} box(es) not {BOX:g}×{BOX:g} px (train uses 50 px boxes around the centre)",
                   False)
    return boxes


def _check_categories(path: Path, categories: Any, report: CheckReport) -> None:
    """The categories list, when given, names 1 and 2 as the release does (the pipeline goes by id)."""
    if categories is None:
        return
    try:
        ids = {int(c["id"]) for c in categories}
    except (KeyError, TypeError, ValueError):
        report.add(path, "'categories' is not a list of {id, name}", False)
        return
    if not {MITOSIS} <= ids <= {MITOSIS, IMPOSTER}:
        report.add(path, f"categories {sorted(ids)}: expected 1 (mitotic figure) and 2 (not mitotic figure)", False)


def _count(path: Path, images: dict[int, MidogImage], boxes: list[tuple[int, int, np.ndarray]], report: CheckReport) -> None:
    """Counts per category and scanner, border-crossing boxes, and box and figure ranges."""
    per_image: Counter = Counter()
    report.counts["images in MIDOG.json"] = len(images)
    report.counts["annotations"] = len(boxes)
    for category, name in ((MITOSIS, "mitotic figures"), (IMPOSTER, "imposters (not mitotic)")):
        report.counts[name] = sum(c == category for _, c, _ in boxes)
    annotated = {i for i, _, _ in boxes}
    report.counts["annotated images"] = len(annotated)
    report.counts["boxes crossing the border"] = sum(
        bool(box[0] < 0 or box[1] < 0 or box[2] > images[i].width or box[3] > images[i].height) for i, _, box in boxes)
    for image_id in sorted(images):
        scanner = scanner_of(image_id)
        key = f"{scanner}: images"
        report.counts[key] = report.counts.get(key, 0) + 1
    for image_id, category, _ in boxes:
        if category == MITOSIS:
            per_image[image_id] += 1
            key = f"{scanner_of(image_id)}: mitotic figures"
            report.counts[key] = report.counts.get(key, 0) + 1
    unknown = sorted(i for i in images if scanner_of(i) == "unknown")
    if unknown:
        report.add(path, f"{len(unknown)} image id(s) outside 1–200 (scanner unknown): {unknown[:5]}", False)
    report.ranges["box side (px)"] = value_range(float(v) for _, _, b in boxes for v in (b[2] - b[0], b[3] - b[1]))
    report.ranges["mitotic figures per annotated image"] = value_range(per_image.get(i, 0) for i in annotated)


def _pair(data: Path, files: list[Path], by_name: dict[str, MidogImage], report: CheckReport) -> None:
    """Images of MIDOG.json without their file, and TIFFs that MIDOG.json does not list."""
    present = {f.name for f in files}
    for name, img in sorted(by_name.items()):
        if name not in present:
            why = "train stops on it" if img.annotated else "not annotated; predict would miss it"
            report.add(data / name, f"listed in MIDOG.json (id {img.image_id}) but missing ({why})", False)
    for f in files:
        if f.name not in by_name:
            report.add(f, "not in MIDOG.json (predict only: no truth to train or evaluate on)", False)
