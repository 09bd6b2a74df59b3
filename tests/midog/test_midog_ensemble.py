"""The distance-weighted merge (ensembles, TTA), the 8 dihedral views mapped back, the stored threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.wsi import open_slide
from medchallenge.midog.inference import detect_image, dihedral, merge_detections, points_back


def test_merge_by_hand() -> None:
    """Model A: (100, 100) 0.8 and (300, 300) 0.5; model B: (110, 100) 0.4 and (300, 340) 0.6.
    (100, 100) and (110, 100) are 10 px apart: one point at the score-weighted mean
    ((0.8·100 + 0.4·110) / 1.2, 100) = (103.33, 100), score (0.8 + 0.4) / 2 = 0.6. (300, 300) and
    (300, 340) are 40 px apart (> 30): separate, each with half its score."""
    a = (np.array([[100.0, 100.0], [300.0, 300.0]]), np.array([0.8, 0.5]))
    b = (np.array([[110.0, 100.0], [300.0, 340.0]]), np.array([0.4, 0.6]))
    points, scores = merge_detections([a, b], radius=30.0)
    np.testing.assert_allclose(points, [[103.0 + 1 / 3, 100.0], [300.0, 340.0], [300.0, 300.0]])
    np.testing.assert_allclose(scores, [0.6, 0.3, 0.25])


def test_merge_takes_one_point_per_model_and_is_exact_on_twins() -> None:
    a = (np.array([[0.0, 0.0]]), np.array([0.9]))
    b = (np.array([[5.0, 0.0], [0.0, 5.0]]), np.array([0.3, 0.6]))  # both near: B's best one joins
    points, scores = merge_detections([a, b])
    np.testing.assert_allclose(points[0], [0.0, 0.6 * 5.0 / 1.5])
    np.testing.assert_allclose(scores, [0.75, 0.15])
    twin = (np.array([[12.3456789, 98.7654321]]), np.array([0.123456789]))
    points, scores = merge_detections([twin, twin])
    assert points.tolist() == twin[0].tolist() and scores.tolist() == twin[1].tolist()  # bit for bit


def test_each_view_maps_a_pixel_back_to_itself() -> None:
    size = 9
    image = torch.zeros(3, size, size)
    image[:, 2, 7] = 1.0  # row 2, column 7: centre (7.5, 2.5)
    for view in range(8):
        row, col = (int(v) for v in (dihedral(image, view)[0] == 1).nonzero()[0])
        np.testing.assert_allclose(points_back(np.array([[col + 0.5, row + 0.5]]), view, size), [[7.5, 2.5]])
    assert len({dihedral(image, v)[0].numpy().tobytes() for v in range(8)}) == 8  # 8 distinct views


class DarkestPixel(torch.nn.Module):
    """Finds the darkest pixel of each patch (a 10 px box around it); its score is the top-left
    pixel's grey value, which differs between views of a patch with different corners."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for im in images:
            grey = im.mean(0)
            row, col = divmod(int(grey.argmin()), grey.shape[1])
            box = torch.tensor([[col + 0.5 - 5, row + 0.5 - 5, col + 0.5 + 5, row + 0.5 + 5]])
            out.append({"boxes": box, "scores": grey[0, 0].reshape(1), "labels": torch.tensor([1])})
        return out


def test_tta_equals_the_mean_over_the_eight_views(tmp_path: Path) -> None:
    """A 32 px image of one patch: corners 0.2, 0.4, 0.6, 0.8 grey, a black pixel at (21, 10). Each
    corner is the top-left one in two of the eight views, so TTA gives one point at the pixel's
    centre (21.5, 10.5) with score (2·0.2 + 2·0.4 + 2·0.6 + 2·0.8) / 8 = 0.5; without TTA, the score
    is the image's own top-left 0.2."""
    import tifffile

    image = np.full((32, 32, 3), 230, np.uint8)
    for (r, c), grey in zip(((0, 0), (0, 31), (31, 0), (31, 31)), (0.2, 0.4, 0.6, 0.8)):
        image[r, c] = round(grey * 255)
    image[10, 21] = 0
    tifffile.imwrite(tmp_path / "one.tiff", image, photometric="rgb")
    with open_slide(tmp_path / "one.tiff") as reader:
        plain = detect_image(DarkestPixel(), reader, 32, torch.device("cpu"), overlap=0.0)
        tta = detect_image(DarkestPixel(), reader, 32, torch.device("cpu"), overlap=0.0, tta=True)
    np.testing.assert_allclose(plain[0], [[21.5, 10.5]])
    np.testing.assert_allclose(plain[1], [51 / 255], atol=1e-6)
    np.testing.assert_allclose(tta[0], [[21.5, 10.5]], atol=1e-5)
    expected = np.mean([round(g * 255) / 255 for g in (0.2, 0.4, 0.6, 0.8)])
    np.testing.assert_allclose(tta[1], [expected], atol=1e-6)


def _checkpoint(path: Path, meta: dict) -> Path:
    from medchallenge.core.checkpoint import save_checkpoint
    from medchallenge.midog.models import MODELS

    spec = {"name": "retinanet", "kwargs": {"backbone": "resnet18", "num_classes": 2, "patch_size": 64,
                                            "trainable_layers": 5}}
    save_checkpoint(path, {"challenge": "midog", "model": spec, "state_dict": MODELS.build(spec).state_dict(),
                           "meta": {"patch_size": 64, "overlap": 0.1, **meta}})
    return path


def test_threshold_auto_is_the_stored_one_and_a_number_overrides(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import tifffile

    import medchallenge.midog.predict as predict

    monkeypatch.setattr(predict, "detect_image",
                        lambda *a, **k: (np.array([[10.0, 10.0], [40.0, 40.0]]), np.array([0.9, 0.6])))
    (tmp_path / "data").mkdir()
    tifffile.imwrite(tmp_path / "data" / "001.tiff", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    ckpt = _checkpoint(tmp_path / "m.pt", {"threshold": 0.7})
    base = ["midog", "predict", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--device", "cpu",
            "--format", "points", "--spacing", "0.25"]

    def found(out: str, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / out), *args])
        assert result.exit_code == 0, result.output
        return len(json.loads((tmp_path / out / "detections.json").read_text())["001.tiff"]), result.output

    count, log = found("auto")  # the default is auto
    assert count == 1 and "--threshold auto: 0.700" in log
    assert found("number", "--threshold", "0.5")[0] == 2
    old = _checkpoint(tmp_path / "old.pt", {})  # trained before thresholds were stored
    result = CliRunner().invoke(app, [*base[:3], str(old), *base[4:], "--out", str(tmp_path / "old")])
    assert result.exit_code == 2 and "old.pt" in result.output and "--threshold" in result.output
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--threshold", "high"])
    assert result.exit_code == 2 and "expected auto or a number" in result.output
