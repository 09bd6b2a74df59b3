"""Whole-slide reading and pyramid writing (medchallenge.core.wsi)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from medchallenge.core.errors import DataError
from medchallenge.core.wsi import open_slide, write_pyramid_tiff


def _image(size: int = 1024) -> np.ndarray:
    """size×size×3 uint8: white with a dark square in the top-left quarter."""
    image = np.full((size, size, 3), 255, np.uint8)
    image[: size // 4, : size // 4] = (120, 40, 90)
    return image


def test_pyramid_opens_in_openslide(tmp_path: Path) -> None:
    path = tmp_path / "slide.tiff"
    write_pyramid_tiff(path, _image(), downsamples=(1, 4, 16), tile=256)
    osr = openslide.OpenSlide(str(path))
    assert osr.level_count == 3
    assert [round(d) for d in osr.level_downsamples] == [1, 4, 16]
    assert osr.level_dimensions[0] == (1024, 1024)
    osr.close()
    with open_slide(path) as slide:
        assert slide.level_count == 3
        assert slide.level_dimensions == [(1024, 1024), (256, 256), (64, 64)]
        region = slide.read_region(0, 0, 1, 32, 32)
        assert region.shape == (32, 32, 3) and region.dtype == np.uint8
        assert np.abs(region.astype(int) - (120, 40, 90)).max() < 20  # JPEG, not exact


def test_outside_bounds_is_fill(tmp_path: Path) -> None:
    path = tmp_path / "slide.tiff"
    write_pyramid_tiff(path, _image(), downsamples=(1, 4, 16), tile=256)
    with open_slide(path) as slide:
        region = slide.read_region(-64, -64, 1, 32, 32)  # level-0 (-64,-64) = 16 level-1 px outside
        assert (region[:16] == 255).all() and (region[:, :16] == 255).all()
        assert np.abs(region[16:, 16:].astype(int) - (120, 40, 90)).max() < 20
        assert (slide.read_region(4096, 4096, 0, 8, 8) == 255).all()
        assert (slide.read_region(4096, 4096, 0, 8, 8, fill=0) == 0).all()


def test_label_mask_is_lossless_and_nearest(tmp_path: Path) -> None:
    labels = np.zeros((512, 512, 3), np.uint8)
    labels[:, :256, 0] = 5
    labels[:256, 256:, 0] = 2
    path = tmp_path / "mask.tiff"
    write_pyramid_tiff(path, labels, downsamples=(1, 4, 16), tile=256, labels=True)
    with open_slide(path) as slide:
        assert np.array_equal(slide.read_level(0, fill=0), labels)
        coarse = slide.read_level(2, fill=0)[..., 0]
        assert set(np.unique(coarse)) <= {0, 2, 5}  # no averaged labels


def test_untiled_tiff_falls_back_to_tifffile(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _image(64), photometric="rgb")
    with open_slide(path) as slide:
        assert slide.level_count == 1
        assert np.array_equal(slide.read_region(0, 0, 0, 64, 64), _image(64))
        assert (slide.read_region(60, 60, 0, 8, 8)[4:, 4:] == 255).all()


def test_bad_files_are_data_errors(tmp_path: Path) -> None:
    path = tmp_path / "slide.tiff"
    write_pyramid_tiff(path, _image(), downsamples=(1, 4, 16), tile=256)
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(path.read_bytes()[:2000])
    text = tmp_path / "notes.tiff"
    text.write_text("not an image")
    for bad in (truncated, text, tmp_path / "missing.tiff"):
        with pytest.raises(DataError) as err, open_slide(bad) as slide:
            slide.read_level(0)
        assert str(bad) in str(err.value)
    with open_slide(path) as slide, pytest.raises(DataError):
        slide.read_region(0, 0, 3, 8, 8)
