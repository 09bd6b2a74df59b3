"""`panda tile` on real slides no one here made (../shared/realdata/wsi): stored pixels, levels, errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from typer.testing import CliRunner

from medchallenge.cli import app
from medchallenge.panda.tiles import TileCache, tile_slide

TCGA = "tcga-cr-7395-01a-01-ts1.svs"  # 2 levels, 4443×3567 and 2221×1783 (downsample 2.0005)
SMALL = "openslide-small.svs"  # 1 level, 16×16
IDS = {TCGA: "a" * 32, SMALL: "b" * 32, "openslide-unreadable.svs": "c" * 32}


@pytest.fixture(autouse=True)
def _log_to_this_runner() -> Iterator[None]:
    """core.console binds its log handler to the stderr of the first CLI call in the process, which
    CliRunner closes afterwards; start each test unconfigured so log lines reach this test's output."""
    logger = logging.getLogger("medchallenge")
    saved = logger.handlers[:], getattr(logger, "_medchallenge_configured", False)
    logger.handlers.clear()
    logger._medchallenge_configured = False  # type: ignore[attr-defined]
    yield
    logger.handlers[:] = saved[0]
    logger._medchallenge_configured = saved[1]  # type: ignore[attr-defined]


def _error_line(output: str) -> str:
    """The one ``error:`` line of a failed command (log lines may precede it); no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _dataset(tmp_path: Path, realdata: Path, names: list[str]) -> Path:
    """A PANDA layout whose train_images are links to the real slides (never copies)."""
    data = tmp_path / "data"
    (data / "train_images").mkdir(parents=True)
    rows = ["image_id,data_provider,isup_grade,gleason_score"]
    for name in names:
        (data / "train_images" / f"{IDS[name]}.tiff").symlink_to(realdata / "wsi" / name)
        rows.append(f"{IDS[name]},karolinska,0,0+0")
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    return data


def _stored(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The stored pixels (H×W×3) of the tiled TIFF page of ``size`` (W, H), decoded by tifffile alone."""
    with tifffile.TiffFile(path) as tif:
        (page,) = [p for p in tif.pages if p.is_tiled and (p.imagewidth, p.imagelength) == size]
        return page.asarray()[..., :3]


def _expected_tile(stored: np.ndarray, lx: int, ly: int, tile: int) -> np.ndarray:
    """``stored[ly:ly+T, lx:lx+T]``, white where the tile lies outside the level."""
    out = np.full((tile, tile, 3), 255, np.uint8)
    h, w = stored.shape[:2]
    x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + tile, w), min(ly + tile, h)
    out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = stored[y0:y1, x0:x1]
    return out


def _level_info(path: Path) -> tuple[list[tuple[int, int]], list[float]]:
    osr = openslide.OpenSlide(str(path))
    info = [tuple(d) for d in osr.level_dimensions], [float(d) for d in osr.level_downsamples]
    osr.close()
    return info


def test_real_svs_tiles_carry_the_levels_stored_pixels(realdata: Path) -> None:
    """Level 1 is 2.0005×: the old OpenSlide reads resampled it (tiles up to 39 grey levels off)."""
    path = realdata / "wsi" / TCGA
    dims, downsamples = _level_info(path)
    assert downsamples[1] != 2.0
    stored = _stored(path, dims[1])
    result = tile_slide(path, level=1, n_tiles=6, tile_size=256)
    assert result.n_tissue >= 4 and not result.fill.any()
    for k in range(6):
        lx, ly = round(result.xs[k] / downsamples[1]), round(result.ys[k] / downsamples[1])
        expected = _expected_tile(stored, lx, ly, 256)
        assert np.abs(result.tiles[k].astype(int) - expected).max() == 0, k


def test_single_level_slide_level_one_is_a_clean_error(realdata: Path, tmp_path: Path, runner: CliRunner) -> None:
    data = _dataset(tmp_path, realdata, [SMALL])
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "1", "--n-tiles", "2",
                                 "--tile-size", "8"])
    assert result.exit_code == 2, result.output
    assert f"{IDS[SMALL]}.tiff: has 1 level(s), --level 1 asked for" in _error_line(result.output)
    assert not list((data / "tiles" / "slides").glob("*.npz"))


def test_level_auto_takes_the_nearest_level_and_says_so(realdata: Path, tmp_path: Path, runner: CliRunner) -> None:
    """One single-level slide makes auto pick level 0 for every slide; recorded in meta.json and logged."""
    data = _dataset(tmp_path, realdata, [TCGA, SMALL])
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "auto", "--n-tiles", "2",
                                 "--tile-size", "16"])
    assert result.exit_code == 0, result.output
    assert f"--level auto: tiling level 0 ({IDS[SMALL]}.tiff has 1 level(s), no level 1)" in result.output
    cache = TileCache(data / "tiles")
    assert cache.meta["level"] == 0 and cache.meta["level_option"] == "auto"
    small = cache.load(IDS[SMALL])  # 16×16: one tile, then a white filler
    assert list(small.fill) == [False, True] and (small.xs[0], small.ys[0]) == (0, 0)
    assert np.array_equal(small.tiles[0], _stored(realdata / "wsi" / SMALL, (16, 16)))
    tcga = cache.load(IDS[TCGA])
    stored = _stored(realdata / "wsi" / TCGA, (4443, 3567))
    for k in range(2):  # level 0: level-0 px are level px
        assert np.array_equal(tcga.tiles[k], _expected_tile(stored, int(tcga.xs[k]), int(tcga.ys[k]), 16))


def test_level_auto_keeps_level_one_when_every_slide_has_it(realdata: Path, tmp_path: Path,
                                                            runner: CliRunner) -> None:
    data = _dataset(tmp_path, realdata, [TCGA])
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "auto", "--n-tiles", "1",
                                 "--tile-size", "64"])
    assert result.exit_code == 0, result.output
    assert "--level auto: tiling level 1 (every slide has level 1)" in result.output
    meta = json.loads((data / "tiles" / "meta.json").read_text())
    assert meta["settings"]["level"] == 1 and meta["info"]["level_option"] == "auto"
    assert meta["info"]["downsample"] == _level_info(realdata / "wsi" / TCGA)[1][1]
    # an explicit --level 1 reuses that cache; --level 0 is refused (other settings)
    again = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "1", "--n-tiles", "1",
                                "--tile-size", "64"])
    assert again.exit_code == 0, again.output
    other = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "0", "--n-tiles", "1",
                                "--tile-size", "64"])
    assert other.exit_code == 2 and "level: 1 → 0" in other.output


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_bad_level_value(tmp_path: Path, realdata: Path, runner: CliRunner, value: str) -> None:
    data = _dataset(tmp_path, realdata, [SMALL])
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", value])
    assert result.exit_code == 2 and "--level" in result.output and "auto" in result.output, result.output


def test_corrupt_real_svs_is_one_line_exit_2(realdata: Path, tmp_path: Path, runner: CliRunner) -> None:
    data = _dataset(tmp_path, realdata, ["openslide-unreadable.svs"])
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "0", "--n-tiles", "2",
                                 "--tile-size", "8"])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert f"{IDS['openslide-unreadable.svs']}.tiff: " in line and "corrupt" in line and "Bogus marker" in line
    assert not list((data / "tiles" / "slides").glob("*"))


def test_sixteen_bit_slide_is_refused_by_tile(tmp_path: Path, runner: CliRunner) -> None:
    """A uint16 slide was tiled with wrapped values and exit 0."""
    data = tmp_path / "data"
    (data / "train_images").mkdir(parents=True)
    image_id = "d" * 32
    tifffile.imwrite(data / "train_images" / f"{image_id}.tiff", np.full((64, 64, 3), 300, np.uint16),
                     photometric="rgb", tile=(32, 32))
    (data / "train.csv").write_text(f"image_id,data_provider,isup_grade,gleason_score\n{image_id},radboud,0,negative\n")
    result = runner.invoke(app, ["panda", "tile", "--data", str(data), "--level", "0", "--n-tiles", "2",
                                 "--tile-size", "8"])
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert f"{image_id}.tiff: not an 8-bit RGB(A) brightfield slide (uint16, 3 samples per pixel, photometric RGB)" in line
    assert not list((data / "tiles" / "slides").glob("*"))


def test_greyscale_label_mask_is_cut_with_the_tiles(tmp_path: Path) -> None:
    """A mask stored as 8-bit greyscale (not RGB) is a label image, not a refused slide."""
    from medchallenge.core.wsi import write_pyramid_tiff

    rgb = np.full((128, 128, 3), 255, np.uint8)
    rgb[:64, :64] = (120, 40, 90)
    labels = np.zeros((128, 128), np.uint8)
    labels[:64, :64] = 2
    write_pyramid_tiff(tmp_path / "s.tiff", rgb, downsamples=(1,), tile=64)
    tifffile.imwrite(tmp_path / "m.tiff", labels, photometric="minisblack", tile=(64, 64))
    result = tile_slide(tmp_path / "s.tiff", level=0, n_tiles=2, tile_size=64, mask_file=tmp_path / "m.tiff",
                        provider="karolinska")
    assert result.masks is not None
    for k in range(2):
        x, y = int(result.xs[k]), int(result.ys[k])
        assert np.array_equal(result.masks[k], labels[y : y + 64, x : x + 64])
    assert result.masks[0].max() == 2
