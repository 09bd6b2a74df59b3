"""``midog predict``: detections on whole images as JSON, and ``midog evaluate`` on them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core import console
from medchallenge.core.checkpoint import expand_checkpoints, load_models
from medchallenge.core.device import amp_dtype, resolve_device
from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.io import write_json
from medchallenge.core.parts import complete_parts, find_parts, merge_when_complete, part_path, select_part
from medchallenge.core.report import EvaluationReport
from medchallenge.core.thresholds import resolve_threshold
from medchallenge.core.wsi import open_slide
from medchallenge.midog.data import annotated_images, load_midog_json, scanner_of
from medchallenge.midog.inference import detect_image, merge_detections
from medchallenge.midog.metrics import Counts, match_image
from medchallenge.midog.models import MODELS
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


FILE_STEMS = {"points": "detections", "grand-challenge": "grand-challenge"}
FORMATS = ("points", "grand-challenge", "both")


def output_files(out: Path, output_format: str, part: str | None) -> dict[str, Path]:
    """Format → file in the folder ``out``: ``detections.json`` (px) and/or ``grand-challenge.json`` (mm);
    with ``--part K/N``, ``<stem>.part-K-of-N.json`` so the parts of an array job never collide."""
    if output_format not in FORMATS:
        raise OptionError(f"--format {output_format}: expected one of {', '.join(FORMATS)}")
    formats = ("points", "grand-challenge") if output_format == "both" else (output_format,)
    return {fmt: part_path(Path(out) / f"{FILE_STEMS[fmt]}.json", part) for fmt in formats}


def _merge_complete(out: Path, output_format: str, part: str | None, manifest: Any) -> None:
    """core.parts' rule: once every part of a format is written by this checkpoint and these options,
    join them into ``detections.json`` / ``grand-challenge.json`` (the union of their images)."""
    for whole in output_files(out, output_format, None).values():
        merge_when_complete(whole, part, _join_json, manifest)


def _join_json(parts: list[Path], target: Path) -> None:
    """Write the union of the part files' ``{file_name: ...}`` objects to ``target`` (an image in two parts: error)."""
    merged: dict[str, Any] = {}
    for path in parts:
        found = json.loads(path.read_text())
        twice = sorted(set(found) & set(merged))
        if twice:
            raise DataError(path, f"{twice[0]} is also in another part")
        merged.update(found)
    write_json(target, merged)


def predict_detections(checkpoints: Path | Sequence[Path], data: Path, out: Path, ids: list[int] | None = None,
                       threshold: str = "auto", overlap: float | None = None, device: str = "auto", batch_size: int = 8,
                       output_format: str = "both", spacing_um: float | None = None, part: str | None = None,
                       overwrite: bool = False, tta: bool = False) -> dict[str, Path]:
    """Detect mitoses on whole images and write them into the folder ``out``; returns format → file.

    ``checkpoints``: one checkpoint, or several (an ensemble; run folders mean their best.pt, a cv
    folder its folds): each model detects, and their detections are merged by distance
    (:func:`~medchallenge.midog.inference.merge_detections`) before the threshold. ``tta``: each
    model sees the 8 dihedral views of every patch, merged the same way. ``threshold``: ``auto``
    (the threshold tuned on validation and stored in the checkpoint; an ensemble's is the mean of
    its members') or a number.

    ``points`` (``detections.json``): ``{file_name: [{"x", "y", "score"}, ...]}`` in px, the
    detections ``>= threshold``. ``grand-challenge`` (``grand-challenge.json``): ``{file_name:
    <"Multiple points" document>}`` in mm, every candidate named by the threshold (see
    :mod:`medchallenge.midog.submission`); the pixel size comes from each TIFF's resolution, else
    ``spacing_um`` (default 0.25 µm/px, said in a log line). ``part`` K/N takes every N-th image and
    writes ``<stem>.part-K-of-N.json`` (``evaluate`` merges the parts). A rerun skips the work only
    when the files were made by these checkpoints (by content hash) with the same options (the
    manifest in ``out``); otherwise, or with ``overwrite``, it redoes them.
    """
    from medchallenge.core.manifest import PredictionManifest

    members = expand_checkpoints([checkpoints] if isinstance(checkpoints, (str, Path)) else checkpoints)
    for member in members:
        if not member.is_file():
            raise DataError(member, "checkpoint not found")
    targets = output_files(out, output_format, part)
    everything = image_files(data, ids)
    files = select_part(everything, part)
    # what changes the files' content; --part is in their names, --batch-size/--device change nothing;
    # the whole job's image list, so the parts of one job share their options and merge
    options = {"threshold": threshold, "overlap": overlap, "format": output_format, "spacing_um": spacing_um,
               "images": [f.name for f in everything], "tta": tta}
    manifest = PredictionManifest(out, members, options)
    paths = list(targets.values())
    if not manifest.pending([p.name for p in paths], [p.exists() for p in paths], overwrite):
        console.log(f"{', '.join(str(p) for p in paths)} already written by this checkpoint with these options:"
                    " skipped (--overwrite redoes)")
        _merge_complete(out, output_format, part, manifest)  # a rerun of a finished part merges
        return targets
    dev = resolve_device(device)
    models = load_models(members, MODELS, challenge="midog", models=["retinanet"], map_location=dev,
                         same_meta=("mitosis_label",))
    cut = ensemble_threshold(threshold, [payload["meta"] for _, payload in models], members)
    results: dict[str, dict[str, Any]] = {fmt: {} for fmt in targets}
    for path in console.track(files, "predict", total=len(files)):
        with open_slide(path) as reader:
            points, scores = detect_ensemble(models, reader, dev, batch_size, overlap, tta)
        if "points" in results:
            keep = scores >= cut
            results["points"][path.name] = [
                {"x": round(float(x), 1), "y": round(float(y), 1), "score": round(float(s), 4)}
                for (x, y), s in zip(points[keep], scores[keep])]
        if "grand-challenge" in results:
            results["grand-challenge"][path.name] = gc_document(points, scores, cut, _spacing(path, spacing_um))
    for fmt, target in targets.items():
        write_json(target, results[fmt])
        manifest.record(target.name)
        console.log(f"wrote {fmt} detections for {len(results[fmt])} image(s) to {target}")
    _merge_complete(out, output_format, part, manifest)
    return targets


def detect_ensemble(models: list[tuple[Any, dict[str, Any]]], reader: Any, device: Any, batch_size: int,
                    overlap: float | None, tta: bool) -> tuple[np.ndarray, np.ndarray]:
    """(points D×2 px, scores D) of one image: each model with its own patch size and overlap (unless
    ``overlap``), with ``tta`` its 8 views merged; several models merged by distance (score = sum / n)."""
    sets = []
    for model, payload in models:
        meta = payload["meta"]
        sets.append(detect_image(model, reader, int(meta["patch_size"]), device, batch_size,
                                 meta["overlap"] if overlap is None else overlap, amp_dtype(device),
                                 label=int(meta.get("mitosis_label", 1)), tta=tta))
    return sets[0] if len(sets) == 1 else merge_detections(sets)


def ensemble_threshold(value: str, metas: list[dict[str, Any]], members: list[Path]) -> float:
    """The score cut: a number as given, or ``auto``: each member's stored threshold (their mean for an ensemble)."""
    cuts = [resolve_threshold(value, meta, member) for meta, member in zip(metas, members)]
    if isinstance(cuts[0], list):
        raise OptionError(f"--threshold {value}: expected auto or one number")
    cut = float(np.mean([float(c) for c in cuts]))
    if str(value).strip().lower() == "auto":
        how = "best F1 on the validation images" if len(cuts) == 1 else f"the mean of the {len(cuts)} members' tuned ones"
        console.log(f"--threshold auto: {cut:.3f} ({how})")
    return cut


def _spacing(path: Path, spacing_um: float | None) -> tuple[float, float]:
    spacing, source = image_spacing_mm(path, DEFAULT_SPACING_UM if spacing_um is None else spacing_um)
    if source != "TIFF resolution":
        console.log(f"{path.name}: no resolution in the TIFF, millimetres from {source}")
    return spacing


def prediction_files(path: Path) -> list[Path]:
    """The detection file(s) ``evaluate --predictions`` names: a file, or predict's folder — its
    ``detections.json``, else all N of its ``detections.part-K-of-N.json`` files, else the same two for
    ``grand-challenge`` (core.parts' rule: a missing part is an error naming it)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "no such detections file or predict folder")
    for stem in FILE_STEMS.values():
        if (path / f"{stem}.json").is_file():
            return [path / f"{stem}.json"]
        if find_parts(path / f"{stem}.json")[0]:
            return complete_parts(path / f"{stem}.json")
    raise DataError(path, "no detections.json or grand-challenge.json (nor their .part-K-of-N files): run predict")


def read_predictions(path: Path) -> Detections:
    """The detections of a file or of predict's folder (parts merged; one format; an image once)."""
    files = prediction_files(path)
    merged = read_detections(files[0])
    for file in files[1:]:
        found = read_detections(file)
        if found.images and merged.images and found.format != merged.format:
            raise DataError(file, f"{found.format} detections among {merged.format} ones")
        twice = sorted(set(found.images) & set(merged.images))
        if twice:
            raise DataError(file, f"{twice[0]} is also in another part")
        if not merged.images:
            merged.format = found.format
        merged.images.update(found.images)
    return merged


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
    """Official F1 summed over the images in ``detections`` (a file or predict's folder; plus ``ids``, whose mitoses count as FN
    when they have no detections); detections of images unknown to the truth are named and ignored.

    Undefined precision, recall or F1 (a zero denominator) are NaN (``null`` in JSON).
    """
    found = read_predictions(detections)
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
            raise DataError(truth, f"--cases {i}: no annotated image {name}")
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
    """``--cases 1,2,10-12`` or ``--cases @file`` (ids separated by spaces, commas or lines)."""
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
    found = read_predictions(detections)
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


def evaluation_report(result: dict[str, Any], plots: Callable[[Path], Any] | None = None) -> EvaluationReport:
    """The common report of :func:`evaluate_detections`' result: F1 the score, one row per image."""
    import pandas as pd

    summary = {k: v for k, v in result.items() if k != "images"}
    cases = pd.DataFrame(result["images"], columns=["image", "tp", "fp", "fn", "precision", "recall", "f1"])
    return EvaluationReport("midog", "F1 (greedy 30 px matching, TP/FP/FN summed over images)", result["f1"],
                            result["n_images"], summary=summary, cases=cases, plots=plots)
