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


# ---------------------------------------------------------------- what counts as a slide and as a level
def _tiled(path: Path, image: np.ndarray, **kwargs: object) -> Path:
    import tifffile

    tifffile.imwrite(path, image, tile=(64, 64), metadata=None, **kwargs)
    return path


NOT_BRIGHTFIELD = {
    # name: (array, tifffile keywords, words the message must hold)
    "uint16-rgb": (np.full((128, 128, 3), 40000, np.uint16), {"photometric": "rgb"}, ("uint16", "3 samples", "RGB")),
    "two-channel": (np.full((128, 128, 2), 7, np.uint8), {"photometric": "minisblack", "planarconfig": "contig"},
                    ("uint8", "2 samples", "MINISBLACK")),
    "minisblack": (np.full((128, 128), 7, np.uint8), {"photometric": "minisblack"}, ("uint8", "1 sample", "MINISBLACK")),
    "four-channel": (np.full((4, 128, 128), 7, np.uint8), {"photometric": "minisblack"},
                     ("uint8", "1 sample", "MINISBLACK", "4 images")),
}


@pytest.mark.parametrize("name", sorted(NOT_BRIGHTFIELD))
@pytest.mark.parametrize("tiled", [True, False])
def test_non_brightfield_tiff_is_refused(tmp_path: Path, name: str, tiled: bool) -> None:
    """16-bit and fluorescence TIFFs were read into wrapped uint8 with no error; now a DataError says what they are."""
    import tifffile

    array, kwargs, words = NOT_BRIGHTFIELD[name]
    path = tmp_path / f"{name}.tiff"
    if tiled:
        _tiled(path, array, **kwargs)
    else:
        tifffile.imwrite(path, array, metadata=None, **kwargs)
    with pytest.raises(DataError) as err, open_slide(path) as slide:
        slide.read_level(0)
    message = str(err.value)
    assert message.startswith(str(path)) and "not an 8-bit RGB(A) brightfield slide" in message
    for word in words:
        assert word in message, message


def test_greyscale_label_mask_is_accepted_as_labels(tmp_path: Path) -> None:
    grey = (np.arange(128 * 128) % 6).astype(np.uint8).reshape(128, 128)
    path = _tiled(tmp_path / "mask.tiff", grey, photometric="minisblack")
    with open_slide(path, labels=True) as mask:
        pixels = mask.read_level(0, fill=0)
    assert pixels.shape == (128, 128, 3) and all(np.array_equal(pixels[..., c], grey) for c in range(3))


def test_rgba_and_separate_planes_read_as_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((96, 160, 1), 255, np.uint8)], axis=2)
    _tiled(tmp_path / "rgba.tiff", rgba, photometric="rgb", extrasamples=["unassalpha"])
    _tiled(tmp_path / "planar.tiff", np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    for name in ("rgba.tiff", "planar.tiff"):
        with open_slide(tmp_path / name) as slide:
            assert np.array_equal(slide.read_level(0), rgb), name


def _pyramid_with_extras(path: Path) -> np.ndarray:
    """Level 0 of 512×384 and a reduced level of 128×96 (both tiled RGB), and pages that are not levels:
    a 100×100 label (another aspect), a 64×48 page described as a thumbnail, a 2-channel reduced page."""
    import tifffile

    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
    rgb = {"photometric": "rgb", "tile": (64, 64), "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, **rgb)
        tif.write(base[::4, ::4], subfiletype=1, **rgb)
        tif.write(np.full((100, 100, 3), 90, np.uint8), subfiletype=1, description="label 100x100", **rgb)
        tif.write(np.full((48, 64, 3), 90, np.uint8), subfiletype=1, description="thumbnail 64x48", **rgb)
        tif.write(np.full((24, 32, 2), 9, np.uint8), subfiletype=1, photometric="minisblack", tile=(16, 16),
                  planarconfig="contig", metadata=None)
    return base


def test_only_true_pyramid_levels_count(tmp_path: Path) -> None:
    path = tmp_path / "pyramid.tiff"
    base = _pyramid_with_extras(path)
    with open_slide(path) as slide:
        assert slide.level_dimensions == [(512, 384), (128, 96)]
        assert slide.level_downsamples == [1.0, 4.0]
        assert np.array_equal(slide.read_level(0), base)
        assert np.array_equal(slide.read_level(1), base[::4, ::4])


def test_subifd_pyramid_levels(tmp_path: Path) -> None:
    """OME-style pyramids keep their reduced levels in SubIFDs, not in the main page chain."""
    import tifffile

    base = np.random.default_rng(2).integers(0, 256, (256, 384, 3), dtype=np.uint8)
    rgb = {"photometric": "rgb", "tile": (64, 64), "metadata": None}
    with tifffile.TiffWriter(tmp_path / "subifd.tiff") as tif:
        tif.write(base, subifds=2, **rgb)
        tif.write(base[::2, ::2], subfiletype=1, **rgb)
        tif.write(base[::4, ::4], subfiletype=1, **rgb)
    with open_slide(tmp_path / "subifd.tiff") as slide:
        assert slide.level_dimensions == [(384, 256), (192, 128), (96, 64)]
        assert np.array_equal(slide.read_level(2), base[::4, ::4])


def _aperio_ycbcr_svs(path: Path) -> np.ndarray:
    """An Aperio SVS whose JPEG 2000 tiles (compression 33003) hold Y, Cb, Cr: every (Cb, Cr) pair once."""
    import imagecodecs
    import tifffile

    ycc = np.empty((256, 256, 3), np.uint8)
    ycc[..., 0] = np.random.default_rng(3).integers(0, 256, (256, 256))
    ycc[..., 1] = np.arange(256)[None, :]
    ycc[..., 2] = np.arange(256)[:, None]
    tiles = [imagecodecs.jpeg2k_encode(np.ascontiguousarray(ycc[y : y + 128, x : x + 128]), level=0,
                                       codecformat="J2K", mct=False, reversible=True)
             for y in (0, 128) for x in (0, 128)]
    description = "Aperio Image Library v10.0.51\r\n256x256 [0,0 256x256] (128x128) J2K/YUV16 Q=70|MPP = 0.5"
    with tifffile.TiffWriter(path) as tif:
        tif.write(iter(tiles), shape=(256, 256, 3), dtype=np.uint8, tile=(128, 128), compression=33003,
                  photometric="rgb", description=description, metadata=None)
    return ycc


def test_aperio_ycbcr_jpeg2000_equals_openslide(tmp_path: Path) -> None:
    path = tmp_path / "ycc.svs"
    ycc = _aperio_ycbcr_svs(path)
    osr = openslide.OpenSlide(str(path))
    assert osr.properties["openslide.vendor"] == "aperio"
    expected = np.asarray(osr.read_region((0, 0), 0, (256, 256)))[..., :3]
    osr.close()
    assert not np.array_equal(expected, ycc)  # the conversion matters
    with open_slide(path) as slide:
        assert slide.backend == "tifffile"
        assert np.array_equal(slide.read_level(0), expected)


# ---------------------------------------------------------------- real files
def _stored_level(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The stored pixels of the TIFF page of ``size`` (W, H), decoded by tifffile alone."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        (page,) = [p for p in tif.pages if p.is_tiled and (p.imagewidth, p.imagelength) == size]
        return page.asarray()[..., :3]


def test_real_svs_non_integer_downsample_reads_stored_pixels(realdata: Path) -> None:
    """Level 1 of the TCGA slide is 2.0005×: OpenSlide resampled the old reads (up to 39 grey levels off)."""
    path = realdata / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    osr = openslide.OpenSlide(str(path))
    dims, downsamples = [tuple(d) for d in osr.level_dimensions], list(osr.level_downsamples)
    osr.close()
    assert dims == [(4443, 3567), (2221, 1783)] and downsamples[1] != 2.0
    stored = _stored_level(path, dims[1])
    with open_slide(path) as slide:
        assert slide.level_dimensions == dims and slide.level_downsamples == downsamples
        for lx, ly in [(0, 0), (256, 256), (1000, 700), (1001, 701), (1999, 1555)]:
            x0, y0 = round(lx * downsamples[1]), round(ly * downsamples[1])
            region = slide.read_region(x0, y0, 1, 200, 200)
            expected = np.full((200, 200, 3), 255, np.uint8)
            part = stored[ly : ly + 200, lx : lx + 200]
            expected[: part.shape[0], : part.shape[1]] = part
            assert np.abs(region.astype(int) - expected).max() == 0, (lx, ly)
        assert np.array_equal(slide.read_level(1), stored)


def test_openslide_backend_refuses_resampled_levels(realdata: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Formats only OpenSlide reads: a non-integer-downsample level is an error, never resampled pixels."""
    from medchallenge.core.wsi import SlideReader

    monkeypatch.setattr(SlideReader, "_open_tiff", lambda self: "forced")
    path = realdata / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as slide:
        assert slide.backend == "openslide"
        assert slide.read_region(0, 0, 0, 8, 8).shape == (8, 8, 3)
        with pytest.raises(DataError, match="non-integer downsample"):
            slide.read_region(512, 512, 1, 8, 8)


def test_real_openslide_fixtures(realdata: Path) -> None:
    """Sizes, levels, downsamples and pixels equal what OpenSlide and tifffile report."""
    for name in ("openslide-small.svs", "openslide-boxes.tiff"):
        path = realdata / "wsi" / name
        osr = openslide.OpenSlide(str(path))
        dims, downsamples = [tuple(d) for d in osr.level_dimensions], list(osr.level_downsamples)
        level0 = np.asarray(osr.read_region((0, 0), 0, dims[0]))[..., :3]
        osr.close()
        with open_slide(path) as slide:
            assert slide.level_dimensions == dims and slide.level_downsamples == downsamples, name
            assert np.array_equal(slide.read_level(0), level0), name
            for level, size in enumerate(dims):
                assert np.array_equal(slide.read_level(level), _stored_level(path, size)), (name, level)
    with open_slide(realdata / "wsi" / "openslide-small.svs") as slide:
        assert slide.level_count == 1 and slide.level_dimensions == [(16, 16)]  # the thumbnail is not a level
    with open_slide(realdata / "wsi" / "openslide-boxes.tiff") as slide:
        assert slide.level_dimensions == [(300, 250), (150, 125), (75, 62), (37, 31)]


def test_real_unreadable_svs_is_one_data_error(realdata: Path) -> None:
    path = realdata / "wsi" / "openslide-unreadable.svs"
    with pytest.raises(DataError) as err, open_slide(path) as slide:
        slide.read_level(0)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert "Bogus marker length" in str(err.value)


def test_tiled_flag(tmp_path: Path) -> None:
    """``tiled``: reads decode only the TIFF tiles they touch (a stripped page is decoded whole)."""
    import tifffile

    write_pyramid_tiff(tmp_path / "tiled.tiff", _image(256), downsamples=(1, 4), tile=64)
    tifffile.imwrite(tmp_path / "strips.tiff", _image(64), photometric="rgb")
    with open_slide(tmp_path / "tiled.tiff") as tiled, open_slide(tmp_path / "strips.tiff") as strips:
        assert tiled.tiled and not strips.tiled
