"""Tile selection: ranking, white fill, mode-2 shift, masks, coarse-level selection = whole level, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.wsi import open_slide, write_pyramid_tiff
from medchallenge.panda.sample import write_sample_dataset
from medchallenge.panda.tiles import Grid, TileCache, select_tiles_whole_level, tile_slide, tile_slides


def test_ranking_and_white_fill() -> None:
    image = np.full((8, 12, 3), 255, np.uint8)
    image[0:4, 4:8] = 10  # darkest tile: grid (0, 1)
    image[4:8, 8:12] = 100  # second: grid (1, 2)
    tiles, index = select_tiles_whole_level(image, 4, 8)
    assert index[:2].tolist() == [1, 5]
    assert (tiles[0] == 10).all() and (tiles[1] == 100).all()
    assert index[6:].tolist() == [-1, -1] and (tiles[6:] == 255).all()  # only 6 grid tiles: 2 white fillers


def test_padding_and_mode_two_shift() -> None:
    assert Grid.of(10, 10, 4, 0) == Grid(3, 3, 4, 1, 1)  # pad 2 → 1 + 1
    assert Grid.of(8, 8, 4, 2) == Grid(3, 3, 4, 2, 2)  # half a tile more, split over both sides
    image = np.full((8, 8, 3), 255, np.uint8)
    image[2:6, 2:6] = 0  # a centred square: one tile in mode 2, four quarter-tiles in mode 0
    tiles2, _ = select_tiles_whole_level(image, 4, 1, mode=2)
    assert (tiles2[0] == 0).all()
    tiles0, _ = select_tiles_whole_level(image, 4, 4, mode=0)
    assert all((t == 0).sum() == 4 * 3 for t in tiles0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("panda_tiles")
    write_sample_dataset(root, n_slides=8, seed=3, size=1024)
    return root


@pytest.mark.parametrize(("tile", "n", "mode"), [(32, 16, 0), (32, 16, 2), (16, 36, 0), (64, 20, 0)])
def test_coarse_selection_equals_whole_level(dataset: Path, tile: int, n: int, mode: int) -> None:
    for slide in sorted((dataset / "train_images").glob("*.tiff")):
        fast = tile_slide(slide, level=1, n_tiles=n, tile_size=tile, mode=mode)
        with open_slide(slide) as reader:
            reference, index = select_tiles_whole_level(reader.read_level(1), tile, n, mode)
        np.testing.assert_array_equal(fast.tiles, reference)
        assert fast.fill.tolist() == (index < 0).tolist()


def test_masks_align_with_tiles(tmp_path: Path) -> None:
    rgb = np.full((256, 256, 3), 255, np.uint8)
    rgb[64:128, 128:192] = 50
    labels = np.zeros((256, 256, 3), np.uint8)
    labels[64:128, 128:192, 0] = 4
    write_pyramid_tiff(tmp_path / "s.tiff", rgb, downsamples=(1, 4), tile=64)
    write_pyramid_tiff(tmp_path / "m.tiff", labels, downsamples=(1, 4), tile=64, labels=True)
    result = tile_slide(tmp_path / "s.tiff", level=0, n_tiles=2, tile_size=64, mask_file=tmp_path / "m.tiff",
                        provider="radboud")
    assert (result.xs[0], result.ys[0]) == (128, 64)
    assert (result.masks[0] == 4).all() and (result.masks[1] == 0).all()
    with pytest.raises(DataError, match="does not fit provider karolinska"):
        tile_slide(tmp_path / "s.tiff", level=0, n_tiles=2, tile_size=64, mask_file=tmp_path / "m.tiff",
                   provider="karolinska")


def test_all_white_slide_is_not_an_error(tmp_path: Path) -> None:
    write_pyramid_tiff(tmp_path / "w.tiff", np.full((512, 512, 3), 255, np.uint8), downsamples=(1, 4, 16))
    result = tile_slide(tmp_path / "w.tiff", level=1, n_tiles=4, tile_size=32)
    assert result.n_tissue == 0 and (result.tiles > 240).all()


def test_cache_is_idempotent_and_resumable(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    tile_slides(dataset, out, level=1, n_tiles=16, tile_size=32, part="1/2")
    first = TileCache(out)
    n_half = len(first)
    tile_slides(dataset, out, level=1, n_tiles=16, tile_size=32, part="2/2")
    cache = TileCache(out)
    train = pd.read_csv(dataset / "train.csv")
    assert 0 < n_half < len(cache) == len(train)
    tiles_csv = pd.read_csv(out / "tiles.csv")
    assert len(tiles_csv) == 16 * len(train) and set(tiles_csv.columns) == {"image_id", "rank", "x", "y", "fill"}
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "slides").iterdir()}
    tile_slides(dataset, out, level=1, n_tiles=16, tile_size=32)  # rerun: nothing redone
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (out / "slides").iterdir()}
    loaded = cache.load(train["image_id"].iloc[0])
    assert loaded.tiles.shape == (16, 32, 32, 3) and loaded.masks is not None
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "panda-tiles" and meta["settings"]["n_tiles"] == 16
    with pytest.raises(OptionError, match="n_tiles: 16 → 36"):
        tile_slides(dataset, out, level=1, n_tiles=36, tile_size=32)
    (out / "slides" / ".x.npz.partial.npz").write_bytes(b"half")  # left by a killed run
    tile_slides(dataset, out, level=1, n_tiles=16, tile_size=32)
    assert not list((out / "slides").glob("*.partial*"))


def test_missing_and_corrupt_slides(dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "test.csv"):
        (data / name).write_text((dataset / name).read_text())
    (data / "train_images").mkdir()
    train = pd.read_csv(dataset / "train.csv")
    first = train["image_id"].iloc[0]
    with pytest.raises(DataError, match="missing"):
        tile_slides(data, tmp_path / "t1", n_tiles=4, tile_size=32)
    tile_slides(data, tmp_path / "t1", n_tiles=4, tile_size=32, skip_missing=True)
    assert len(TileCache(tmp_path / "t1")) == 0
    good = (dataset / "train_images" / f"{first}.tiff").read_bytes()
    (data / "train_images" / f"{first}.tiff").write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match=first):
        tile_slides(data, tmp_path / "t2", n_tiles=4, tile_size=32, skip_missing=True)
    (data / "train_images" / f"{first}.tiff").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="not a readable TIFF"):
        tile_slides(data, tmp_path / "t3", n_tiles=4, tile_size=32, skip_missing=True)
