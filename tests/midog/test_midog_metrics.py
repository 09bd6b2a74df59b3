"""MIDOG.json parsing (the real file) and the matching rule on hand-built cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medchallenge.core.errors import DataError
from medchallenge.midog.data import annotated_images, load_midog_json
from medchallenge.midog.metrics import Counts, match_image


def test_real_midog_json(realdata: Path) -> None:
    images = load_midog_json(realdata / "midog/MIDOG.json")
    assert len(images) == 200
    assert sum(len(i.mitoses) + len(i.imposters) for i in images.values()) == 4435
    assert sum(len(i.mitoses) for i in images.values()) == 1721
    assert all(not images[k].annotated for k in range(151, 201))
    assert len(annotated_images(images)) == 150
    for img in images.values():  # border-crossing boxes keep their own centre, which lies inside the image
        if len(img.mitoses):
            assert (img.mitoses[:, 0] <= img.width).all() and (img.mitoses[:, 1] <= img.height).all()
    assert images[1].scanner == "Hamamatsu XR" and images[120].scanner == "Aperio CS2"


def test_matching_rules() -> None:
    # two detections on one figure: 1 TP + 1 FP
    assert match_image([[100, 100]], [[101, 100], [99, 101]]).as_dict()["tp"] == 1
    assert match_image([[100, 100]], [[101, 100], [99, 101]]).fp == 1
    # one detection between two figures counts once
    c = match_image([[100, 100], [140, 100]], [[120, 100]])
    assert (c.tp, c.fp, c.fn) == (1, 0, 1)
    # no ground truth: every detection a FP
    c = match_image(np.zeros((0, 2)), [[1, 1], [50, 50]])
    assert (c.tp, c.fp, c.fn) == (0, 2, 0)
    # beyond the radius: FN + FP
    c = match_image([[0, 0]], [[30.1, 0]])
    assert (c.tp, c.fp, c.fn) == (0, 1, 1)
    assert match_image([[0, 0]], [[30, 0]]).tp == 1
    total = Counts(2, 1, 1)
    assert total.f1 == pytest.approx(4 / 6) and total.precision == pytest.approx(2 / 3)


def test_bad_json(tmp_path: Path) -> None:
    base = {"images": [{"file_name": "001.tiff", "id": 1, "width": 100, "height": 100}],
            "categories": [], "annotations": [{"bbox": [10, 10, 5, 60], "category_id": 1, "image_id": 1, "id": 1}]}
    (tmp_path / "a.json").write_text(json.dumps(base))
    with pytest.raises(DataError, match="x2 > x1"):
        load_midog_json(tmp_path / "a.json")
    base["annotations"][0].update(bbox=[10, 10, 60, 60], image_id=7)
    (tmp_path / "b.json").write_text(json.dumps(base))
    with pytest.raises(DataError, match="image_id 7"):
        load_midog_json(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="missing key 'annotations'"):
        load_midog_json(tmp_path / "c.json")
