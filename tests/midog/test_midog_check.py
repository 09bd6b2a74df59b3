"""``midog check``: the real MIDOG.json with header-only TIFFs, every known bad input, strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medchallenge.cli import app


def _tiff(path: Path, width: int, height: int, **kwargs: object) -> None:
    """A TIFF whose header says width×height RGB at 0.25 µm/px; no pixels written (a sparse file)."""
    import tifffile

    options = {"shape": (height, width, 3), "dtype": np.uint8, "photometric": "rgb", "resolution": (4e4, 4e4),
               "resolutionunit": "CENTIMETER", **kwargs}
    tifffile.imwrite(path, **options)


def _check(data: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["midog", "check", "--data", str(data), "--json", *extra])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def test_check_on_the_real_midog_json(realdata: Path, tmp_path: Path) -> None:
    data = tmp_path / "midog"
    data.mkdir()
    (data / "MIDOG.json").symlink_to(realdata / "midog" / "MIDOG.json")
    for img in json.loads((realdata / "midog" / "MIDOG.json").read_text())["images"]:
        _tiff(data / img["file_name"], img["width"], img["height"])
    code, report = _check(data, "--workers", "2")
    assert code == 0 and report["ok"] and report["problems"] == [], report["problems"]
    assert list(report)[:6] == ["challenge", "data", "counts", "ranges", "problems", "ok"]
    counts, ranges = report["counts"], report["ranges"]
    assert (counts["image files"], counts["images in MIDOG.json"], counts["annotated images"]) == (200, 200, 150)
    assert (counts["annotations"], counts["mitotic figures"], counts["imposters (not mitotic)"]) == (4435, 1721, 2714)
    assert counts["boxes crossing the border"] == 48  # fine: their centres lie inside
    assert [counts[f"{s}: images"] for s in ("Hamamatsu XR", "Hamamatsu S360", "Aperio CS2", "Leica GT450")] == [50] * 4
    assert sum(counts[f"{s}: mitotic figures"] for s in ("Hamamatsu XR", "Hamamatsu S360", "Aperio CS2")) == 1721
    assert ranges["box side (px)"] == [50.0, 50.0] and ranges["pixel size (µm)"] == [0.25, 0.25]
    assert ranges["width (px)"] == [6171, 7215] and ranges["height (px)"] == [4595, 5412]


def _dataset(root: Path, annotations: list[dict] | None = None, images: list[dict] | None = None) -> Path:
    root.mkdir()
    images = images or [{"file_name": f"00{i}.tiff", "id": i, "width": 120, "height": 90} for i in (1, 2)]
    annotations = annotations if annotations is not None else [
        {"bbox": [10, 10, 60, 60], "category_id": 1, "image_id": 1, "id": 1},
        {"bbox": [-20, 30, 30, 80], "category_id": 2, "image_id": 2, "id": 2}]  # crosses the border: fine
    (root / "MIDOG.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                 "categories": [{"id": 1, "name": "mitotic figure"},
                                                                {"id": 2, "name": "not mitotic figure"}]}))
    for img in images:
        if "/" not in str(img.get("file_name")):
            _tiff(root / img["file_name"], 120, 90)
    return root


def test_a_good_small_folder_has_no_problem(tmp_path: Path) -> None:
    code, report = _check(_dataset(tmp_path / "d"))
    assert code == 0 and report["problems"] == [] and report["counts"]["boxes crossing the border"] == 1


BAD_JSON = [  # (annotations change, what the message says): each stops load_midog_json, so tile and train
    ({"bbox": [10, 10, 5, 60]}, "x2 > x1"),
    ({"bbox": [10, 10, 60]}, "four finite numbers"),
    ({"image_id": 7}, "image_id 7 is not in 'images'"),
    ({"category_id": 3}, "unknown category_id 3"),
    ({"bbox": "10,10,60,60"}, "needs bbox"),
]


@pytest.mark.parametrize(("change", "message"), BAD_JSON)
def test_bad_annotations_name_the_file_and_stop(tmp_path: Path, change: dict, message: str) -> None:
    bad = {"bbox": [10, 10, 60, 60], "category_id": 1, "image_id": 1, "id": 9, **change}
    good = {"bbox": [40, 30, 90, 80], "category_id": 1, "image_id": 2, "id": 1}
    code, report = _check(_dataset(tmp_path / "d", [good, bad, bad]))
    assert code == 2 and not report["ok"]
    found = [p for p in report["problems"] if message in p["problem"]]
    assert len(found) == 2 and all(p["path"].endswith("MIDOG.json") and p["blocking"] for p in found)  # both, one pass
    assert report["counts"]["mitotic figures"] == 1  # the good one still counted


@pytest.mark.parametrize(("images", "message"), [
    ([{"file_name": "../x.tiff", "id": 1, "width": 120, "height": 90}], "file_name '../x.tiff'"),
    ([{"file_name": "001.tiff", "id": 1, "width": 120, "height": 90},
      {"file_name": "002.tiff", "id": 1, "width": 120, "height": 90}], "id 1 is also 001.tiff's id"),
    ([{"file_name": "001.tiff", "id": 1, "width": 120}], "needs file_name, id, width, height"),
])
def test_bad_image_entries_stop(tmp_path: Path, images: list[dict], message: str) -> None:
    code, report = _check(_dataset(tmp_path / "d", [], images))
    assert code == 2 and any(message in p["problem"] and p["blocking"] for p in report["problems"]), report


def test_missing_key_and_broken_json_stop(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d")
    (data / "MIDOG.json").write_text(json.dumps({"images": []}))
    code, report = _check(data)
    assert code == 2 and report["problems"][0]["problem"] == "missing key 'annotations'"
    (data / "MIDOG.json").write_text("{")
    assert _check(data)[0] == 2


def test_tiff_problems_name_the_image(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d")
    (data / "001.tiff").write_bytes(b"II*\x00garbage")  # a truncated TIFF: tile stops on it
    _tiff(data / "002.tiff", 121, 90)  # not the size MIDOG.json gives
    import tifffile

    tifffile.imwrite(data / "003.tiff", np.zeros((90, 120), np.uint16))  # not 8-bit RGB, not in MIDOG.json
    code, report = _check(data)
    problems = {Path(p["path"]).name: p for p in report["problems"]}
    assert code == 2 and problems["001.tiff"]["blocking"] and "not a readable TIFF" in problems["001.tiff"]["problem"]
    assert "121×90 px, but MIDOG.json gives 120×90 px" in problems["002.tiff"]["problem"]
    assert "8-bit RGB" in problems["003.tiff"]["problem"] and problems["003.tiff"]["blocking"]


def test_warnings_let_tile_go_on(tmp_path: Path) -> None:
    anns = [{"bbox": [10, 10, 60, 60], "category_id": 1, "image_id": 1, "id": 1},
            {"bbox": [10, 10, 60, 60], "category_id": 1, "image_id": 1, "id": 1},  # the same box and id twice
            {"bbox": [200, 10, 250, 60], "category_id": 1, "image_id": 2, "id": 3}]  # centre outside the image
    data = _dataset(tmp_path / "d", anns)
    (data / "001.tiff").unlink()  # annotated, missing: train stops on it, tile does not
    import tifffile

    tifffile.imwrite(data / "002.tiff", np.zeros((90, 120, 3), np.uint8), photometric="rgb")  # no resolution
    code, report = _check(data)
    assert code == 0 and report["ok"] and all(not p["blocking"] for p in report["problems"])
    text = "\n".join(f"{Path(p['path']).name}: {p['problem']}" for p in report["problems"])
    for expected in ("001.tiff: listed in MIDOG.json (id 1) but missing (train stops on it)",
                     "the same box as an earlier annotation", "annotation id(s) used more than once",
                     "centre (225, 35) outside image 2", "002.tiff: no resolution tags"):
        assert expected in text, text


def test_an_empty_folder_stops_and_the_table_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["midog", "check", "--data", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no .tiff images" in result.output and "no MIDOG.json" in result.output


def test_what_check_calls_blocking_stops_tile(tmp_path: Path) -> None:
    bad = {"bbox": [10, 10, 5, 60], "category_id": 1, "image_id": 1, "id": 1}
    data = _dataset(tmp_path / "json", [bad])
    result = CliRunner().invoke(app, ["midog", "tile", "--data", str(data), "--cache", str(tmp_path / "t1")])
    assert result.exit_code == 2 and "MIDOG.json" in result.output and "x2 > x1" in result.output
    data = _dataset(tmp_path / "size")
    _tiff(data / "002.tiff", 121, 90)
    result = CliRunner().invoke(app, ["midog", "tile", "--data", str(data), "--cache", str(tmp_path / "t2")])
    assert result.exit_code == 2 and "002.tiff" in result.output and "MIDOG.json gives 120×90" in result.output
