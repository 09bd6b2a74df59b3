"""The fast `panda tile` path on outside-made slides: equal to the whole-level rule, and each speed-up's part.

Slides come from bench/panda_tile.py's writer (odd, non-square level sizes, JPEG pyramid, pen line),
tiny here: level 1 of ~700 px in 64-px stored tiles, grid tiles of 32 px.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tifffile

import medchallenge.panda.tiles as tiles_mod
from medchallenge.core.wsi import open_slide
from medchallenge.panda.tiles import Grid, select_tiles_whole_level, tile_slide

BENCH = Path(__file__).resolve().parents[2] / "bench" / "panda_tile.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("panda_tile_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def slides(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outside")
    out = {}
    # seeds where each safeguard is needed: fragments 0 (32 px, 12 tiles, mode 0) needs the shift
    # spread, cores_pen 2 (32 px, 36 tiles, mode 0) the second round; a margin alone fails on most
    for layout, seed in (("cores_pen", 2), ("resection", 1), ("fragments", 0)):
        info = bench.write_outside_slide(root / f"{layout}.tiff", layout, 700, seed, stored_tile=64)
        w1, h1 = info.level_dims[1]
        assert w1 != h1 and w1 % 32 and h1 % 32  # odd, non-square: the grid is padded and shifted
        if layout == "cores_pen":
            assert info.pen_fraction > 0  # a pen line is drawn
        out[layout] = root / f"{layout}.tiff"
    return out


@pytest.mark.parametrize("mode", [0, 2])
@pytest.mark.parametrize("n_tiles", [12, 36, 40])
def test_fast_path_equals_whole_level_rule(slides: dict[str, Path], mode: int, n_tiles: int) -> None:
    for path in slides.values():
        fast = tile_slide(path, level=1, n_tiles=n_tiles, tile_size=32, mode=mode)
        with tifffile.TiffFile(path) as tif:  # the level decoded whole by tifffile alone
            level1 = tif.pages[1].asarray()
        reference, index = select_tiles_whole_level(level1, 32, n_tiles, mode)
        np.testing.assert_array_equal(fast.tiles, reference)  # the same tiles, in the same rank order
        grid = Grid.of(level1.shape[0], level1.shape[1], 32, mode)
        x, y = grid.origin(index[index >= 0])
        with open_slide(path) as reader:
            ds = reader.level_downsamples[1]
        assert fast.xs[: len(x)].tolist() == np.round(x * ds).astype(int).tolist()
        assert fast.ys[: len(y)].tolist() == np.round(y * ds).astype(int).tolist()


def test_fast_path_reads_fewer_tiles(slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above must come from the candidate path, not from reading every tile."""
    reads = []
    original = tiles_mod._read_exact

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003
        reads.append(len(args[5]))
        return original(*args, **kwargs)

    monkeypatch.setattr(tiles_mod, "_read_exact", counting)
    with open_slide(slides["cores_pen"]) as reader:
        w, h = reader.level_dimensions[1]
    tile_slide(slides["cores_pen"], level=1, n_tiles=12, tile_size=32)
    assert 12 <= reads[0] < Grid.of(h, w, 32, 0).rows * Grid.of(h, w, 32, 0).cols / 3


def test_band_sums_and_estimate_are_exact(slides: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    edges = np.array([0, 0, 5, 5, 17, 36, 37])  # empty bands included, the last reaching H
    expected = np.stack([image[a:b].sum(axis=(0, 2), dtype=np.int64) for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_array_equal(tiles_mod._band_sums(image, edges), expected)
    with open_slide(slides["fragments"]) as reader:
        w, h = reader.level_dimensions[1]
        coarse = reader.read_level(2).astype(np.int64).sum(axis=2)
        for mode in (0, 2):
            grid = Grid.of(h, w, 32, mode)
            means, spread = tiles_mod._estimate_means(reader, 1, 2, grid)
            ds_l, ds_c = reader.level_downsamples[1], reader.level_downsamples[2]
            for i in rng.choice(grid.rows * grid.cols, 40, replace=False):  # the docstring's rule, tile by tile
                x, y = grid.origin(np.array([i]))
                kx = np.ceil(np.array([x[0], x[0] + 32]) * ds_l / ds_c - 0.5).astype(int)
                ky = np.ceil(np.array([y[0], y[0] + 32]) * ds_l / ds_c - 0.5).astype(int)
                inside = coarse[max(ky[0], 0):max(ky[1], 0), max(kx[0], 0):max(kx[1], 0)]
                total = (ky[1] - ky[0]) * (kx[1] - kx[0])
                want = (inside.sum() + 765 * (total - inside.size)) / total / 3 if total else 255.0
                assert means[i] == pytest.approx(want, abs=1e-9)


def test_pixel_sum_is_exact() -> None:
    full = np.full((512, 512, 3), 255, np.uint8)  # the largest sum a 512-px tile can have
    assert tiles_mod._pixel_sum(full) == 255 * 512 * 512 * 3
    noisy = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert tiles_mod._pixel_sum(noisy) == int(noisy.sum(dtype=np.int64))


def test_direct_jpeg_decode_equals_tifffile(slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles decoded straight into recycled buffers (a cache of 2 tiles: every read recycles)."""
    import imagecodecs

    path = slides["resection"]
    with tifffile.TiffFile(path) as tif:
        levels = [tif.pages[i].asarray() for i in (1, 2)]
    direct = []
    original = imagecodecs.jpeg8_decode

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003
        direct.append(kwargs.get("out") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(imagecodecs, "jpeg8_decode", counting)
    with open_slide(path) as reader:
        reader.TILE_CACHE = 2
        h, w = levels[0].shape[:2]
        ds = reader.level_downsamples[1]
        for level, expected in zip((1, 2), levels):
            np.testing.assert_array_equal(reader.read_level(level), expected)
        garbage = np.full((50, 50, 3), 7, np.uint8)
        assert len(direct) > 10 and all(direct)  # the direct path was taken, into buffers
        reader.TILE_CACHE = 3
        t = 64  # the stored tile size: read each stored tile, then the two before again (cache hits
        for y in range(0, h, t):  # that must not have been written over by a recycled buffer)
            done: list[int] = []
            for x in range(0, w, t):
                done.append(x)
                for px in done[::-1][:3]:
                    got = reader.read_region(int(round(px * ds)), int(round(y * ds)), 1, t, t)
                    want = np.full((t, t, 3), 255, np.uint8)
                    part = levels[0][y:y + t, px:px + t]
                    want[:part.shape[0], :part.shape[1]] = part
                    np.testing.assert_array_equal(got, want)
        region = reader.read_region(int(round((w - 20) * ds)), int(round(-10 * ds)), 1, 50, 50, out=garbage)
        assert region is garbage  # written in place
        assert (region[:10] == 255).all() and (region[:, 20:] == 255).all()  # outside: white, not garbage
        np.testing.assert_array_equal(region[10:, :20], levels[0][:40, w - 20:])


def test_tiling_imports_no_heavy_modules(slides: dict[str, Path]) -> None:
    """A process that only tiles starts without pandas, rich, torch, scipy or openslide."""
    code = ("import sys; from pathlib import Path; from medchallenge.panda.tiles import tile_slide;"
            f"tile_slide(Path({str(slides['cores_pen'])!r}), 1, 8, 32);"
            "print(sorted(m for m in ('pandas', 'rich', 'torch', 'scipy', 'openslide') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
