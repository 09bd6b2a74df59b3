"""``midog predict``: detections on whole images as JSON, and ``midog evaluate`` on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core import console
from medchallenge.core.checkpoint import load_checkpoint, load_state_dict_checked
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import write_json
from medchallenge.core.wsi import open_slide
from medchallenge.midog.data import annotated_images, load_midog_json, scanner_of
from medchallenge.midog.inference import detect_image
from medchallenge.midog.metrics import Counts, match_image
from medchallenge.midog.models import build_model
from medchallenge.midog.submission import (
    DEFAULT_SPACING_UM,
    Detections,
    gc_document,
    image_spacing_mm,
    read_detections,
)


def image_files(data: Path, ids: list[int] | None) -> list[Path]:
    """``NNN.tiff`` files to process: the given ids, or every ``*.tif[f]`` in ``data``."""
    data = Path(data)
    if ids is None:
        files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise DataError(data, "no .tiff images")
        return files
    files = [data / f"{i:03d}.tiff" for i in ids]
    for f in files:
        if not f.is_file():
            raise DataError(f, "image not found")
    return files


def predict_detections(checkpoint: Path, data: Path, out: Path, ids: list[int] | None = None, threshold: str = "0.5",
                       overlap: float | None = None, device: str = "auto", batch_size: int = 8,
                       output_format: str = "points", spacing_um: float | None = None) -> dict[str, Any]:
    """Detect mitoses on whole images and write them as ``out``.

    ``points``: ``{file_name: [{"x", "y", "score"}, ...]}`` in px, the detections ``>= threshold``.
    ``grand-challenge``: ``{file_name: <"Multiple points" document>}`` in mm, every candidate named
    by the threshold (see :mod:`medchallenge.midog.submission`); the pixel size comes from each
    TIFF's resolution, else ``spacing_um`` (default 0.25 µm/px, said in a log line).
    """
    if output_format not in ("points", "grand-challenge"):
        raise OptionError(f"--format {output_format}: expected points or grand-challenge")
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, challenge="midog", models=["retinanet"])
    model = build_model(state["model"])
    load_state_dict_checked(model, state["state_dict"], checkpoint)
    model = model.to(dev).eval()
    meta = state["meta"]
    cut = _threshold(threshold, meta)
    result: dict[str, Any] = {}
    files = image_files(data, ids)
    for path in console.track(files, "predict", total=len(files)):
        with open_slide(path) as reader:
            points, scores = detect_image(model, reader, int(meta["patch_size"]), dev, batch_size,
                                          meta["overlap"] if overlap is None else overlap, amp_dtype(dev))
        if output_format == "points":
            keep = scores >= cut
            result[path.name] = [{"x": round(float(x), 1), "y": round(float(y), 1), "score": round(float(s), 4)}
                                 for (x, y), s in zip(points[keep], scores[keep])]
        else:
            spacing, source = image_spacing_mm(path, DEFAULT_SPACING_UM if spacing_um is None else spacing_um)
            if source != "TIFF resolution":
                console.log(f"{path.name}: no resolution in the TIFF, millimetres from {source}")
            result[path.name] = gc_document(points, scores, cut, spacing)
    write_json(out, result)
    console.log(f"wrote detections for {len(result)} image(s) to {out}")
    return result


def _threshold(threshold: str, meta: dict[str, Any]) -> float:
    if threshold == "auto":
        cut = float(meta["threshold"])
        console.log(f"--threshold auto: {cut:.3f} (best F1 on the validation images)")
        return cut
    try:
        return float(threshold)
    except ValueError as err:
        raise OptionError(f"--threshold {threshold}: expected a number or auto") from err


def detections_in_pixels(found: Detections, images: dict[str, Any], data: Path | None,
                         spacing_um: float | None, radius: float | None = None) -> dict[str, np.ndarray]:
    """Each scored image's detections as D×2 px; grand-challenge millimetres divided by the image's
    spacing, read from its TIFF in ``data`` as predict did (``spacing_um`` when the TIFF has no
    resolution; required when the image is not there). With ``radius`` (px), an image whose pixel
    size is not 0.25 µm gets a warning: the container's 7.5 µm radius is another px radius there."""
    if found.format == "points":
        return dict(found.images)
    pixels = {}
    for name, mm in found.images.items():
        if name not in images:
            continue
        tiff = Path(data) / name if data is not None else None
        if tiff is not None and tiff.is_file():
            spacing, _ = image_spacing_mm(tiff, DEFAULT_SPACING_UM if spacing_um is None else spacing_um)
        elif spacing_um is not None:
            spacing = (spacing_um / 1000.0,) * 2
        else:
            raise DataError(found.path, f"{name}: grand-challenge points are in millimetres and {tiff or name} is"
                                        " not there to read its pixel size: pass --data (the images) or --spacing")
        if radius is not None and abs(spacing[0] * 1000 - DEFAULT_SPACING_UM) > 1e-9:
            console.warn(f"{name}: {spacing[0] * 1000:.4f} µm/px; the evaluation container's 7.5 µm radius is"
                         f" {7.5e-3 / spacing[0]:.1f} px there, --radius is {radius:g} px")
        pixels[name] = mm / np.asarray(spacing)
    return pixels


def evaluate_detections(detections: Path, truth: Path, radius: float = 30.0, ids: list[int] | None = None,
                        data: Path | None = None, spacing_um: float | None = None) -> dict[str, Any]:
    """Official F1 summed over the images in ``detections`` (plus ``ids``, whose mitoses count as FN
    when they have no detections); detections of images unknown to the truth are named and ignored.

    Undefined precision, recall or F1 (a zero denominator) are NaN (``null`` in JSON).
    """
    found = read_detections(detections)
    images = {img.file_name: img for img in annotated_images(load_midog_json(truth))}
    unknown = sorted(set(found.images) - set(images))
    if unknown:
        console.warn(f"{len(unknown)} image(s) in the detections are not annotated in {Path(truth).name},"
                     f" ignored: {', '.join(unknown[:5])}")
    points = detections_in_pixels(found, images, data, spacing_um, radius)
    names = [n for n in found.images if n in images]
    for i in ids or []:
        name = f"{i:03d}.tiff"
        if name not in images:
            raise DataError(truth, f"--ids {i}: no annotated image {name}")
        if name not in names:
            names.append(name)
    total, by_scanner = Counts(), {}
    per_image = []
    for name in names:
        img = images[name]
        counts = match_image(img.mitoses, points.get(name, np.zeros((0, 2))), radius)
        total += counts
        by_scanner.setdefault(scanner_of(img.image_id), Counts()).__iadd__(counts)
        per_image.append({"image": name, **counts.as_dict()})
    return {**total.as_dict(), "n_images": len(names), "radius": radius, "format": found.format,
            "by_scanner": {k: v.as_dict() for k, v in sorted(by_scanner.items())}, "images": per_image}


def read_ids(spec: str | None) -> list[int] | None:
    """``--ids 1,2,10-12`` or ``--ids @file`` (ids separated by spaces, commas or lines)."""
    if spec is None:
        return None
    from medchallenge.core.parts import parse_case_range

    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise DataError(path, "ids file not found")
        spec = ",".join(path.read_text().replace(",", " ").split())
    return parse_case_range(spec)


def plot_crops(detections: Path, truth: Path, data: Path, out: Path, n: int = 8, size: int = 128,
               spacing_um: float | None = None) -> Path:
    """Crops around the first ``n`` ground-truth mitoses of the scored images: truth (green ring),
    detections (red dot), imposters (yellow ring). Written to ``out/crops.png``."""
    from medchallenge.core.plots import save_image_grid

    images = {img.file_name: img for img in annotated_images(load_midog_json(truth))}
    found = read_detections(detections)
    points_px = detections_in_pixels(found, images, data, spacing_um)
    crops, titles = [], []
    yy, xx = np.mgrid[:size, :size]
    for name in [n for n in found.images if n in images]:
        img = images[name]
        points = points_px[name]
        with open_slide(Path(data) / name) as reader:
            for cx, cy in img.mitoses:
                if len(crops) >= n:
                    break
                x0, y0 = int(cx) - size // 2, int(cy) - size // 2
                crop = reader.read_region(x0, y0, 0, size, size).copy()
                for (px, py), colour, ring in [((p[0], p[1]), (0, 200, 0), True) for p in img.mitoses] + \
                        [((p[0], p[1]), (230, 200, 0), True) for p in img.imposters] + \
                        [((p[0], p[1]), (230, 0, 0), False) for p in points]:
                    d = np.hypot(xx - (px - x0), yy - (py - y0))
                    crop[((d > 22) & (d < 25)) if ring else (d < 4)] = colour
                crops.append(crop)
                titles.append(f"{name} ({cx:.0f}, {cy:.0f})")
    save_image_grid(crops, titles, Path(out) / "crops.png", cols=4)
    return Path(out) / "crops.png"
