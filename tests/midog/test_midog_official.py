"""MIDOG scores against an independent re-implementation of the organisers' scorer, and real files.

The reference below is written from the organisers' code, not from medchallenge's:
evalutils ``score_detection`` (for each ground-truth point in order, its hits within the radius
from nearest to farthest, the first one not yet used is a TP, else a FN; unused predictions are
FPs), summed over images as DeepMicroscopy/MIDOG_evaluation_docker ``evaluation.py`` (MIDOG 2021)
does: precision = tp/(tp+fp), recall = tp/(tp+fn), f1 = 2tp/(2tp+fp+fn), a zero denominator
being an error there (undefined: ``null`` here). The container works in millimetres with a
7.5 µm radius; the ground truth is the unclipped box centre (the database's coordinates).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.errors import DataError
from medchallenge.midog.data import load_midog_json
from medchallenge.midog.metrics import match_image
from medchallenge.midog.predict import evaluate_detections


def official_counts(truth: list, predictions: list, radius: float) -> tuple[int, int, int]:
    """(tp, fp, fn) of evalutils ``score_detection`` for one image."""
    if not truth:
        return 0, len(predictions), 0
    used = [False] * len(predictions)
    tp = fn = 0
    for g in truth:
        hits = sorted((math.dist(g[:2], p[:2]), k) for k, p in enumerate(predictions) if math.dist(g[:2], p[:2]) <= radius)
        for _, k in hits:
            if not used[k]:
                used[k] = True
                tp += 1
                break
        else:
            fn += 1
    return tp, used.count(False), fn


def official_aggregate(per_case: list[tuple[int, int, int]]) -> dict[str, float | None]:
    """MIDOG 2021 ``score_aggregates``: sums, then the three ratios (None where it would divide by 0)."""
    tp, fp, fn = (sum(c[i] for c in per_case) for i in range(3))

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"tp": tp, "fp": fp, "fn": fn, "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def strict_loads(text: str) -> dict:
    """json.loads that refuses NaN/Infinity, as jq or JavaScript do."""
    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def midog_json(path: Path, images: list[tuple[int, int, int]], boxes: list[tuple[int, int, list[float]]]) -> Path:
    """A MIDOG.json: images (id, width, height) named NNN.tiff; boxes (image id, category, bbox)."""
    path.write_text(json.dumps({
        "images": [{"file_name": f"{i:03d}.tiff", "id": i, "width": w, "height": h} for i, w, h in images],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [{"bbox": b, "category_id": c, "image_id": i, "id": k + 1} for k, (i, c, b) in enumerate(boxes)]}))
    return path


def cases_csv(folder: Path) -> list[dict]:
    """The rows of evaluate's cases.csv, an empty (undefined) score read back as None."""
    import pandas as pd

    rows = pd.read_csv(folder / "cases.csv").to_dict("records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def cli(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stdout and stderr together)."""
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.output


# --- item 1: truth centres are the unclipped box centres ---------------------------------------

def test_real_border_mitoses_keep_their_unclipped_centre(realdata: Path) -> None:
    raw = json.loads((realdata / "midog/MIDOG.json").read_text())
    size = {img["id"]: (img["width"], img["height"]) for img in raw["images"]}
    images = load_midog_json(realdata / "midog/MIDOG.json")
    expected: dict[tuple[int, int], list[tuple[float, float]]] = {}
    border = moved_mitoses = 0
    for ann in raw["annotations"]:
        x1, y1, x2, y2 = ann["bbox"]
        expected.setdefault((ann["image_id"], ann["category_id"]), []).append(((x1 + x2) / 2, (y1 + y2) / 2))
        w, h = size[ann["image_id"]]
        if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
            border += 1
            clipped = ((max(x1, 0) + min(x2, w)) / 2, (max(y1, 0) + min(y2, h)) / 2)
            moved_mitoses += ann["category_id"] == 1 and clipped != ((x1 + x2) / 2, (y1 + y2) / 2)
            img = images[ann["image_id"]]
            centres = img.mitoses if ann["category_id"] == 1 else img.imposters
            assert ((x1 + x2) / 2, (y1 + y2) / 2) in {tuple(c) for c in centres}, ann
            if ann["category_id"] == 1:
                assert clipped not in {tuple(c) for c in centres} or clipped == ((x1 + x2) / 2, (y1 + y2) / 2)
    assert border == 48 and moved_mitoses == 13  # the file's facts (SOURCES.md, issue 11)
    for (image_id, category), centres in expected.items():  # every centre, in annotation order
        got = images[image_id].mitoses if category == 1 else images[image_id].imposters
        np.testing.assert_array_equal(got, np.asarray(centres))


def test_clipping_would_flip_a_match(tmp_path: Path) -> None:
    # the real annotation 3315 of image 117: a mitosis box [-13, 2083, 37, 2133] (centre x 12;
    # clipped, 18.5). A detection at x = 44 is 32 px from the true centre, 25.5 from the clipped one.
    box = [-13.0, 2083.0, 37.0, 2133.0]
    truth = midog_json(tmp_path / "MIDOG.json", [(117, 6485, 4793)], [(117, 1, box)])
    det = tmp_path / "det.json"
    det.write_text(json.dumps({"117.tiff": [{"x": 44.0, "y": 2108.0, "score": 0.9}]}))
    expected = official_aggregate([official_counts([((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)], [(44.0, 2108.0)], 30)])
    assert (expected["tp"], expected["fp"], expected["fn"]) == (0, 1, 1)
    code, out, _ = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--json"])
    assert code == 0
    got = strict_loads(out)
    assert {k: got[k] for k in expected} == expected


# --- the matching rule and undefined scores ----------------------------------------------------

def test_matching_equals_the_official_rule_on_random_images() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        truth = rng.uniform(0, 200, (int(rng.integers(0, 8)), 2))
        near = (truth + rng.normal(0, 20, truth.shape))[rng.random(len(truth)) < 0.7]  # some within 30 px
        dets = rng.permutation(np.concatenate([near, rng.uniform(0, 200, (int(rng.integers(0, 6)), 2))]))
        c = match_image(truth, dets, 30.0)
        assert (c.tp, c.fp, c.fn) == official_counts(truth.tolist(), dets.tolist(), 30.0)


@pytest.mark.parametrize(("mitoses", "dets", "undefined"), [
    (0, 0, {"precision", "recall", "f1"}),  # no truth, no detections: nothing is defined
    (0, 2, {"recall"}),                     # detections only: precision 0, F1 0
    (2, 0, {"precision"}),                  # mitoses only: recall 0, F1 0
])
def test_undefined_scores_are_null(tmp_path: Path, mitoses: int, dets: int, undefined: set[str]) -> None:
    boxes = [(1, 2, [300.0, 300.0, 350.0, 350.0])]  # an imposter: the image counts as annotated
    boxes += [(1, 1, [100.0 * k, 100.0, 100.0 * k + 50, 150.0]) for k in range(1, mitoses + 1)]
    truth = midog_json(tmp_path / "MIDOG.json", [(1, 1000, 800)], boxes)
    det = tmp_path / "det.json"
    det.write_text(json.dumps({"001.tiff": [{"x": 600.0 + 60 * k, "y": 600.0, "score": 0.9} for k in range(dets)]}))
    code, out, err = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--json"])
    assert code == 0 and "RuntimeWarning" not in err
    got = strict_loads(out)
    truth_pts = [(125.0 + 100 * (k - 1), 125.0) for k in range(1, mitoses + 1)]
    expected = official_aggregate([official_counts(truth_pts, [(600.0 + 60 * k, 600.0) for k in range(dets)], 30)])
    assert {k: got[k] for k in expected} == expected
    assert {k for k in ("precision", "recall", "f1") if got[k] is None} == undefined
    assert got["by_scanner"]["Hamamatsu XR"]["f1"] == expected["f1"]
    written = strict_loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert written["f1"] == expected["f1"] and cases_csv(tmp_path / "evaluation")[0]["precision"] == expected["precision"]


# --- item 2: the grand-challenge format (millimetres) -------------------------------------------

def write_tiff(path: Path, width: int, height: int, **resolution: object) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((height, width, 3), 200, np.uint8), photometric="rgb", tile=(16, 16), **resolution)
    return path


UM_025_INCH = {"resolution": (101600.0, 101600.0), "resolutionunit": "INCH"}  # 25.4 mm / 101600 = 0.25 µm


def sitk_mm(path: Path, x: float, y: float) -> tuple[float, float]:
    """The reference container's millimetres: SimpleITK's physical point of a continuous index."""
    import SimpleITK as sitk

    return tuple(sitk.ReadImage(str(path)).TransformContinuousIndexToPhysicalPoint((float(x), float(y))))


@pytest.mark.parametrize("resolution", [
    UM_025_INCH,
    {"resolution": (4e4, 5e4), "resolutionunit": "CENTIMETER"},
    {"resolution": (4e4, 4e4), "resolutionunit": "NONE"},
    {},
])
def test_tiff_spacing_is_what_simpleitk_reads(tmp_path: Path, resolution: dict) -> None:
    import SimpleITK as sitk

    from medchallenge.midog.submission import tiff_spacing_mm

    path = write_tiff(tmp_path / "a.tiff", 40, 32, **resolution)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    reference = reader.GetSpacing()  # (1, 1) is SimpleITK's "no physical size": pixels
    got = tiff_spacing_mm(path)
    assert (got is None) == (reference == (1.0, 1.0))
    if got is not None:
        assert got == pytest.approx(reference, rel=1e-12)


def _checkpoint(path: Path) -> Path:
    from medchallenge.core.checkpoint import save_checkpoint
    from medchallenge.midog.models import build_detector

    kwargs = {"backbone": "resnet18", "num_classes": 2, "patch_size": 64, "trainable_layers": 5}
    model = build_detector(**kwargs)
    save_checkpoint(path, {"challenge": "midog", "model": {"name": "retinanet", "kwargs": kwargs},
                           "state_dict": model.state_dict(), "meta": {"threshold": 0.5, "patch_size": 64, "overlap": 0.1}})
    return path


FIXED = (np.array([[10.5, 20.0], [50.0, 60.0], [70.0, 30.0], [75.25, 5.5]]), np.array([0.9, 0.3, 0.5, 0.7]))


def test_predict_writes_the_reference_document_and_evaluate_reads_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import medchallenge.midog.predict as predict

    monkeypatch.setattr(predict, "detect_image", lambda *a, **k: (FIXED[0].copy(), FIXED[1].copy()))
    data = tmp_path / "data"
    first = write_tiff(data / "001.tiff", 96, 80, **UM_025_INCH)
    write_tiff(data / "002.tiff", 96, 80)  # no resolution: --spacing
    ckpt = _checkpoint(tmp_path / "m.pt")
    base = ["midog", "predict", "--checkpoint", str(ckpt), "--data", str(data), "--device", "cpu", "--threshold", "0.5"]
    assert cli(base + ["--format", "grand-challenge", "--spacing", "0.5", "--out", str(tmp_path / "gc")])[0] == 0
    assert cli(base + ["--format", "points", "--out", str(tmp_path / "px")])[0] == 0
    assert sorted(p.name for p in (tmp_path / "gc").iterdir()) == [".manifest", "grand-challenge.json", "manifest.json"]
    assert sorted(p.name for p in (tmp_path / "px").glob("*.json")) == ["detections.json", "manifest.json"]
    gc = json.loads((tmp_path / "gc" / "grand-challenge.json").read_text())
    for name, spacing_mm in (("001.tiff", None), ("002.tiff", 0.0005)):
        doc = gc[name]
        assert set(doc) == {"type", "points", "version"}
        assert doc["type"] == "Multiple points" and doc["version"] == {"major": 1, "minor": 0}
        assert [p["name"] for p in doc["points"]] == ["mitotic figure", "non-mitotic figure", "mitotic figure",
                                                       "mitotic figure"]
        assert [p["probability"] for p in doc["points"]] == pytest.approx(FIXED[1].tolist())
        for p, (x, y) in zip(doc["points"], FIXED[0]):
            assert set(p) == {"name", "point", "probability"} and p["point"][2] == 0
            mm = sitk_mm(first, x, y) if spacing_mm is None else (x * spacing_mm, y * spacing_mm)
            assert p["point"][:2] == pytest.approx(mm, rel=1e-12)
    px = json.loads((tmp_path / "px" / "detections.json").read_text())
    assert len(px["001.tiff"]) == 3  # the same detections as the mitotic-named points
    truth = midog_json(tmp_path / "MIDOG.json", [(1, 96, 80), (2, 96, 80)],
                       [(1, 1, [-15.0, -5.0, 35.0, 45.0]), (1, 1, [40.0, 20.0, 90.0, 70.0]), (2, 1, [45.0, 35.0, 95.0, 85.0])])
    args = ["midog", "evaluate", "--truth", str(truth), "--data", str(data), "--json"]
    code, out_gc, _ = cli(args + ["--predictions", str(tmp_path / "gc"), "--spacing", "0.5"])
    assert code == 0
    written = strict_loads((tmp_path / "evaluation" / "metrics.json").read_text())
    gc_cases = cases_csv(tmp_path / "evaluation")
    code, out_px, _ = cli(args + ["--predictions", str(tmp_path / "px")])
    got_gc, got_px = strict_loads(out_gc), strict_loads(out_px)
    assert [got_gc[k] for k in ("tp", "fp", "fn")] == [got_px[k] for k in ("tp", "fp", "fn")]
    # the container on 001.tiff: truth in mm from the same spacing, mitotic-named points, 7.5 µm
    truth_mm = [sitk_mm(first, 10.0, 20.0), sitk_mm(first, 65.0, 45.0)]
    dets_mm = [p["point"] for p in gc["001.tiff"]["points"] if p["name"] == "mitotic figure"]
    expected = official_aggregate([official_counts(truth_mm, dets_mm, 7.5e-3)])
    assert written["format"] == "grand-challenge" and gc_cases[0]["image"] == "001.tiff"
    assert {k: gc_cases[0][k] for k in expected} == expected
    assert (expected["tp"], expected["fp"], expected["fn"]) == (2, 1, 0)


def test_millimetres_are_never_taken_for_pixels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiff(data / "001.tiff", 3000, 3000, **UM_025_INCH)
    truth = midog_json(tmp_path / "MIDOG.json", [(1, 3000, 3000)], [(1, 1, [-15.0, -15.0, 35.0, 35.0])])  # centre (10, 10)
    gc = tmp_path / "gc.json"  # (0.5, 0.5) mm = (2000, 2000) px: far from the mitosis
    gc.write_text(json.dumps({"001.tiff": {"type": "Multiple points", "version": {"major": 1, "minor": 0}, "points": [
        {"name": "mitotic figure", "point": [0.5, 0.5, 0], "probability": 0.9}]}}))
    px = tmp_path / "px.json"  # the same numbers in the pixel format ARE pixels: 13.4 px from (10, 10)
    px.write_text(json.dumps({"001.tiff": [{"x": 0.5, "y": 0.5, "score": 0.9}]}))
    for det, counts in ((gc, (0, 1, 1)), (px, (1, 0, 0))):
        code, out, _ = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--data", str(data),
                            "--json"])
        got = strict_loads(out)
        assert code == 0 and (got["tp"], got["fp"], got["fn"]) == counts
    mm = official_counts([(10 * 0.00025, 10 * 0.00025)], [(0.5, 0.5)], 7.5e-3)
    assert mm == (0, 1, 1)


def test_non_mitotic_points_are_not_detections(tmp_path: Path) -> None:
    spacing = 0.00025
    truth = midog_json(tmp_path / "MIDOG.json", [(1, 1000, 1000)],
                       [(1, 1, [75.0, 75.0, 125.0, 125.0]), (1, 1, [475.0, 475.0, 525.0, 525.0])])
    points = [{"name": "non-mitotic figure", "point": [100 * spacing, 100 * spacing, 0], "probability": 0.4},
              {"point": [500 * spacing, 500 * spacing, 0]},  # the 2021 format: no name, a detection
              {"name": "non-mitotic figure", "point": [900 * spacing, 900 * spacing, 0], "probability": 0.1}]
    det = tmp_path / "gc.json"
    det.write_text(json.dumps({"001.tiff": {"type": "Multiple points", "points": points}}))
    code, out, _ = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--spacing", "0.25",
                        "--json"])
    assert code == 0
    kept = [p["point"] for p in points if p.get("name", "mitotic figure") == "mitotic figure"]
    expected = official_aggregate([official_counts([(100 * spacing, 100 * spacing, 0), (500 * spacing, 500 * spacing, 0)],
                                                   kept, 7.5e-3)])
    got = strict_loads(out)
    assert {k: got[k] for k in expected} == expected and (got["tp"], got["fp"], got["fn"]) == (1, 0, 1)


def test_millimetres_need_a_pixel_size(tmp_path: Path) -> None:
    truth = midog_json(tmp_path / "MIDOG.json", [(1, 100, 100)], [(1, 1, [0.0, 0.0, 50.0, 50.0])])
    det = tmp_path / "gc.json"
    det.write_text(json.dumps({"001.tiff": {"type": "Multiple points", "points": [
        {"name": "mitotic figure", "point": [0.00625, 0.00625, 0], "probability": 0.9}]}}))
    code, _, out = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--data",
                        str(tmp_path / "none"), "--json"])
    assert code == 2 and "gc.json" in out and "--spacing" in out and "Traceback" not in out
    code, out, _ = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--data",
                        str(tmp_path / "none"), "--spacing", "0.25", "--json"])
    assert code == 0 and strict_loads(out)["tp"] == 1


def test_tile_keeps_the_pixel_size(tmp_path: Path) -> None:
    from medchallenge.midog.submission import tiff_spacing_mm

    write_tiff(tmp_path / "data" / "001.tiff", 40, 30, **UM_025_INCH)
    write_tiff(tmp_path / "data" / "002.tiff", 40, 30)
    assert cli(["midog", "tile", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "tiles")])[0] == 0
    assert tiff_spacing_mm(tmp_path / "tiles" / "001.tiff") == pytest.approx((0.00025, 0.00025), rel=1e-9)
    assert tiff_spacing_mm(tmp_path / "tiles" / "002.tiff") is None


# --- items 3 and 4: bad detection files, names that are paths ----------------------------------

GC_POINT = {"name": "mitotic figure", "point": [0.01, 0.01, 0], "probability": 0.9}


@pytest.mark.parametrize(("content", "message"), [
    ('[{"x": 1, "y": 1, "score": 0.9}]', "got a JSON list"),
    ('{"001.tiff": [{"x": 1, "y": 1}, {"x": NaN, "y": 3}]}', "001.tiff[1].x: nan is not a finite number"),
    ('{"001.tiff": [{"x": "12", "y": 3}]}', "001.tiff[0].x: '12' is not a finite number"),
    ('{"001.tiff": [{"x": 12}]}', "001.tiff[0]: expected"),
    ('{"001.tiff": [[12, 3]]}', "001.tiff[0]: expected"),
    ('{"001.tiff": 5}', "001.tiff: expected a list"),
    ('{"001.tiff": {"type": "Multiple points", "points": [{"name": "mitotic figure", "point": [NaN, 0.1, 0]}]}}',
     "001.tiff.points[0].point[0]: nan is not a finite number"),
    ('{"001.tiff": {"type": "Multiple points", "points": [{"name": "mitotic figure"}]}}', "001.tiff.points[0]: expected"),
    ('{"001.tiff": {"type": "Multiple points", "points": [{"name": "Mitosis", "point": [0.1, 0.1, 0]}]}}',
     "name 'Mitosis' is neither"),
    ('{"001.tiff": {"type": "Multiple points"}}', 'needs a "points" list'),
    (json.dumps({"type": "Multiple points", "points": [GC_POINT]}), "without its image"),
    (json.dumps({"001.tiff": [], "002.tiff": {"type": "Multiple points", "points": []}}), "mixes"),
    ('{"../001.tiff": []}', "'../001.tiff' contains a path separator"),
    ('{"/tmp/001.tiff": []}', "contains a path separator"),
])
def test_bad_detection_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    truth = midog_json(tmp_path / "MIDOG.json", [(1, 100, 100), (2, 100, 100)],
                       [(1, 1, [0.0, 0.0, 50.0, 50.0]), (2, 1, [0.0, 0.0, 50.0, 50.0])])
    det = tmp_path / "det.json"
    det.write_text(content)
    result = CliRunner().invoke(app, ["midog", "evaluate", "--predictions", str(det), "--truth", str(truth), "--spacing",
                                      "0.25", "--json"])
    assert result.exit_code == 2, result.output
    assert str(det) in result.output and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "evaluation" / "metrics.json").exists()


def test_file_names_in_midog_json_are_plain_names(tmp_path: Path) -> None:
    path = tmp_path / "MIDOG.json"
    path.write_text(json.dumps({"images": [{"file_name": "001.tiff", "id": 1, "width": 9, "height": 9},
                                           {"file_name": "../x.tiff", "id": 2, "width": 9, "height": 9}],
                                "annotations": []}))
    with pytest.raises(DataError, match=r"images\[1\]: file_name '\.\./x\.tiff'"):
        load_midog_json(path)
    det = tmp_path / "det.json"
    det.write_text("{}")
    code, _, out = cli(["midog", "evaluate", "--predictions", str(det), "--truth", str(path)])
    assert code == 2 and "MIDOG.json" in out and "../x.tiff" in out


def test_evaluate_function_matches_the_reference_over_several_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images, boxes, found, per_case = [], [], {}, []
    for image_id in (1, 2, 51, 101):
        images.append((image_id, 400, 300))
        centres = rng.uniform(-10, 410, (int(rng.integers(0, 6)), 2)).round(1)
        for cx, cy in centres:
            boxes.append((image_id, 1, [cx - 25, cy - 25, cx + 25, cy + 25]))
        dets = np.concatenate([centres + rng.normal(0, 25, centres.shape), rng.uniform(0, 400, (2, 2))])
        found[f"{image_id:03d}.tiff"] = [{"x": float(x), "y": float(y), "score": 0.9} for x, y in dets]
        per_case.append(official_counts(centres.tolist(), dets.tolist(), 30.0))
    imposters = [(i, 2, [0.0, 0.0, 50.0, 50.0]) for i, _, _ in images]  # every image annotated, some without mitoses
    truth = midog_json(tmp_path / "MIDOG.json", images, boxes + imposters)
    det = tmp_path / "det.json"
    det.write_text(json.dumps(found))
    got = evaluate_detections(det, truth)
    expected = official_aggregate(per_case)
    assert {k: (None if isinstance(got[k], float) and math.isnan(got[k]) else got[k]) for k in expected} == expected
