"""`panda check`: the real metadata and slides, every known bad input, strict JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.core.wsi import write_pyramid_tiff

WSI = {"tcga-cr-7395-01a-01-ts1.svs": (2, 4443, 3567), "openslide-boxes.tiff": (4, 300, 250),
       "openslide-small.svs": (1, 16, 16)}
A, B, C, D = "a" * 32, "b" * 32, "c" * 32, "d" * 32


def _check(runner: CliRunner, data: Path, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["panda", "check", "--data", str(data), "--json", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def _problems(report: dict) -> list[tuple[str, str, bool]]:
    return [(Path(p["path"]).name, p["problem"], p["blocking"]) for p in report["problems"]]


@pytest.mark.parametrize("csv", ["train.csv", "train_with_noise_flags.csv"])
def test_real_metadata_and_slides(realdata: Path, tmp_path: Path, runner: CliRunner, csv: str) -> None:
    """The real train.csv (10,616 rows) with the real slides linked in for its first three ids."""
    data = tmp_path / "data"
    (data / "train_images").mkdir(parents=True)
    shutil.copy(realdata / "panda" / csv, data / "train.csv")
    truth = pd.read_csv(realdata / "panda" / csv, dtype={"image_id": str})
    for image_id, name in zip(truth["image_id"], WSI):
        (data / "train_images" / f"{image_id}.tiff").symlink_to(realdata / "wsi" / name)
    code, report = _check(runner, data, "--level", "auto", "--skip-missing")
    assert code == 0 and report["ok"] is True, report
    counts = report["counts"]
    assert counts["train.csv rows"] == len(truth) == 10616
    for grade, n in truth["isup_grade"].value_counts().items():
        assert counts[f"train ISUP {grade}"] == n
    for provider, n in truth["data_provider"].value_counts().items():
        assert counts[f"train {provider}"] == n
    assert counts["train slides on disk"] == counts["slides readable"] == 3
    assert counts["train slides missing"] == len(truth) - 3
    levels, widths, heights = zip(*WSI.values())
    ranges = report["ranges"]
    assert ranges["levels"] == [min(levels), max(levels)]
    assert ranges["level-0 width (px)"] == [min(widths), max(widths)]
    assert ranges["level-0 height (px)"] == [min(heights), max(heights)]
    assert ranges["level-1 downsample"] == [2.0, 2.0005]  # TCGA's 2221 px under 4443 px
    assert ranges["tiling level (--level auto)"] == [0, 0]  # the 16×16 SVS has one level
    problems = _problems(report)
    assert problems[0] == ("train.csv", "row 7275: gleason_score 4+3 means ISUP 3, isup_grade is 2 (kept as given)",
                           False)
    assert truth["image_id"].iloc[7273] == "b0a92a74cb53899311acc30b7405e101"
    assert ("train_images", f"{len(truth) - 3} slides listed in train.csv are missing (skipped: --skip-missing),"
            f" e.g. {', '.join(f'{i}.tiff' for i in truth['image_id'][3:6])}", False) in problems
    # without --skip-missing the missing slides stop tile; at --level 1 the one-level slide does too
    code, report = _check(runner, data)
    blocking = [p for p in _problems(report) if p[2]]
    assert code == 2 and report["ok"] is False
    assert [p[0] for p in blocking] == ["train_images", f"{truth['image_id'][2]}.tiff"]
    assert blocking[1][1].startswith("has 1 level(s), --level 1 asked for")


@pytest.mark.parametrize("level", ["0", "1"])
@pytest.mark.parametrize("name", [*WSI, "openslide-unreadable.svs"])
def test_real_slides_get_the_verdict_of_tile(realdata: Path, tmp_path: Path, runner: CliRunner, name: str,
                                             level: str) -> None:
    """check and tile agree on each real slide: both go on, or both stop naming the slide and the same problem."""
    data = tmp_path / "data"
    (data / "train_images").mkdir(parents=True)
    (data / "train_images" / f"{A}.tiff").symlink_to(realdata / "wsi" / name)
    (data / "train.csv").write_text(f"image_id,data_provider,isup_grade,gleason_score\n{A},karolinska,0,0+0\n")
    tile = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", level, "--n-tiles", "1",
                               "--tile-size", "8"])
    code, report = _check(runner, data, "--level", level)
    assert code == tile.exit_code, (tile.output, report)
    if code == 2:
        ((path, problem, blocking),) = [p for p in _problems(report) if p[2]]
        assert path == f"{A}.tiff" and f"{A}.tiff: {problem}" in tile.output
        assert ("has 1 level(s)" if level == "1" else "Bogus marker") in problem
    assert code == (2 if "unreadable" in name or (level == "1" and WSI[name][0] == 1) else 0)


def _slide(path: Path, size: int = 64, dtype: type = np.uint8) -> None:
    if dtype is np.uint8:
        rgb = np.full((size, size, 3), 255, np.uint8)
        rgb[: size // 2, : size // 2] = (120, 40, 90)
        write_pyramid_tiff(path, rgb, downsamples=(1, 2), tile=16)
    else:  # a 16-bit slide (refused by tile in issue 11)
        tifffile.imwrite(path, np.full((size, size, 3), 300, np.uint16), photometric="rgb", tile=(16, 16))


def _mask(path: Path, label: int, size: int = 64) -> None:
    labels = np.zeros((size, size, 3), np.uint8)
    labels[: size // 2, : size // 2, 0] = label
    write_pyramid_tiff(path, labels, downsamples=(1, 2), tile=16, labels=True)


def _dataset(root: Path, rows: list[str], test_rows: list[str] | None = None) -> Path:
    """A PANDA layout: train.csv of ``rows``, a 64 px two-level slide and a mask per well-formed id."""
    data = root / "data"
    for folder in ("train_images", "train_label_masks", "test_images"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    (data / "train.csv").write_text("\n".join(["image_id,data_provider,isup_grade,gleason_score", *rows]) + "\n")
    for row in rows:
        image_id, provider = row.split(",")[:2]
        if len(image_id) == 32 and image_id.isalnum():
            _slide(data / "train_images" / f"{image_id}.tiff")
            _mask(data / "train_label_masks" / f"{image_id}_mask.tiff", 2 if provider == "karolinska" else 4)
    test_rows = test_rows if test_rows is not None else [f"{D},radboud"]
    (data / "test.csv").write_text("\n".join(["image_id,data_provider", *test_rows]) + "\n")
    for row in test_rows:
        _slide(data / "test_images" / f"{row.split(',')[0]}.tiff")
    return data


GOOD = [f"{A},radboud,3,4+3", f"{B},karolinska,1,3+3"]


def test_a_good_dataset_passes_and_tile_agrees(tmp_path: Path, runner: CliRunner) -> None:
    data = _dataset(tmp_path, GOOD)
    code, report = _check(runner, data, "--workers", "2")
    assert code == 0 and report["problems"] == [] and report["ok"] is True
    assert list(report)[:6] == ["challenge", "data", "counts", "ranges", "problems", "ok"]
    assert report["challenge"] == "panda" and report["data"] == str(data.absolute())
    assert report["counts"]["train slides on disk"] == 2 and report["counts"]["test slides on disk"] == 1
    assert report["counts"]["train masks on disk"] == 2
    assert report["ranges"]["radboud mask labels"] == [0, 4]
    assert report["ranges"]["karolinska mask labels"] == [0, 2]
    assert report["ranges"]["level-0 width (px)"] == [64, 64]
    text = runner.invoke(app, ["panda", "check", "--data", str(data)])
    assert text.exit_code == 0 and "no problems found" in text.output
    assert runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "1", "--n-tiles", "2",
                               "--tile-size", "8"]).exit_code == 0


def test_every_bad_csv_row_is_listed(tmp_path: Path, runner: CliRunner) -> None:
    """The rows the readers refuse one at a time (issue 11) are all listed at once, each with its row."""
    rows = [*GOOD, f"{C},leiden,0,negative", f"{A},radboud,0,negative", "../../evil/x,radboud,0,negative",
            f"{D},radboud,7,4+4", f"{'e' * 32},radboud,1,6+6"]
    data = _dataset(tmp_path, rows, test_rows=[f"{'f' * 32},radboud", f"{'f' * 32},radboud"])
    code, report = _check(runner, data)
    problems = [(path, text) for path, text, blocking in _problems(report) if blocking]
    assert code == 2
    assert problems[:6] == [
        ("train.csv", f"row 5: duplicate image_id {A} (first at row 2; 1 duplicate row(s))"),
        ("train.csv", "row 6: image_id '../../evil/x' contains a path separator or control character: ids become"
                      " file names and must be plain names"),
        ("train.csv", "row 4: unknown data_provider 'leiden' (expected radboud or karolinska)"),
        ("train.csv", "row 7: isup_grade '7' is not an integer 0–5"),
        ("train.csv", f"row 8: unknown gleason_score '6+6' for {'e' * 32}"),
        ("test.csv", f"row 3: duplicate image_id {'f' * 32} (first at row 2; 1 duplicate row(s))"),
    ]
    tile = runner.invoke(app, ["panda", "tile", "--data", str(data)])
    assert tile.exit_code == 2 and "duplicate image_id" in tile.output


def test_missing_column_and_missing_csv(tmp_path: Path, runner: CliRunner) -> None:
    data = _dataset(tmp_path, GOOD)
    (data / "train.csv").write_text(f"image_id,data_provider,gleason_score\n{A},radboud,4+3\n")
    code, report = _check(runner, data)
    assert code == 2 and _problems(report)[0][:2] == (
        "train.csv", "missing column(s) isup_grade; found image_id, data_provider, gleason_score")
    (data / "train.csv").unlink()
    code, report = _check(runner, data)
    assert code == 2 and _problems(report)[0] == ("train.csv", "file not found", True)


def test_slide_and_mask_problems_name_their_files(tmp_path: Path, runner: CliRunner) -> None:
    """Missing slide, 16-bit slide, mask labels outside the provider's, a mask of another size, an
    orphan mask, a Gleason score the ISUP table contradicts: blocking exactly where tile stops."""
    data = _dataset(tmp_path, [*GOOD, f"{C},radboud,2,3+4", f"{D},radboud,2,4+3"], test_rows=[])
    (data / "train_images" / f"{C}.tiff").unlink()  # missing slide
    _slide(data / "train_images" / f"{D}.tiff", dtype=np.uint16)  # refused by tile
    _mask(data / "train_label_masks" / f"{B}_mask.tiff", label=4)  # Karolinska labels are 0-2
    _mask(data / "train_label_masks" / f"{A}_mask.tiff", label=3, size=128)  # not the slide's size
    _mask(data / "train_label_masks" / f"{'9' * 32}_mask.tiff", label=1)  # no slide listed
    code, report = _check(runner, data)
    assert code == 2
    got = set(_problems(report))
    assert ("train.csv", "row 5: gleason_score 4+3 means ISUP 3, isup_grade is 2 (kept as given)", False) in got
    assert (f"{C}.tiff", "slide listed in train.csv is missing (--skip-missing to skip it)", True) in got
    assert (f"{D}.tiff", "not an 8-bit RGB(A) brightfield slide (uint16, 3 samples per pixel, photometric RGB):"
                         " convert it to 8-bit RGB first", True) in got
    assert (f"{B}_mask.tiff", "mask label 4 does not fit provider karolinska (labels 0–2)", True) in got
    assert (f"{A}_mask.tiff", "level 0 is 128×128 px, its slide 64×64 px (tile would cut misaligned masks)",
            False) in got
    assert (f"{'9' * 32}_mask.tiff", "mask without a slide listed in train.csv (ignored by tile)", False) in got
    assert len(got) == 6, got
    # tile stops on each blocking one; with them gone (and the size warning left) both go on
    (data / "train.csv").write_text("image_id,data_provider,isup_grade,gleason_score\n" + "\n".join(GOOD[:1]) + "\n")
    code, report = _check(runner, data, "--level", "0")
    assert code == 0 and not any(p[2] for p in _problems(report)), report
    assert (f"{A}_mask.tiff", "level 0 is 128×128 px, its slide 64×64 px (tile would cut misaligned masks)",
            False) in _problems(report)
    tile = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "0", "--n-tiles", "2",
                               "--tile-size", "8"])
    assert tile.exit_code == 0, tile.output


def test_mask_labels_outside_the_provider_stop_tile_as_check_says(tmp_path: Path, runner: CliRunner) -> None:
    data = _dataset(tmp_path, GOOD[1:], test_rows=[])
    _mask(data / "train_label_masks" / f"{B}_mask.tiff", label=4)
    code, report = _check(runner, data, "--level", "0")
    assert code == 2 and _problems(report) == [(f"{B}_mask.tiff", "mask label 4 does not fit provider karolinska"
                                                                  " (labels 0–2)", True)]
    tile = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "0", "--n-tiles", "2",
                               "--tile-size", "8"])
    assert tile.exit_code == 2 and f"{B}_mask.tiff: mask label 4 does not fit provider karolinska" in tile.output
