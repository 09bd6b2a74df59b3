"""Whole-slide images: reading regions of pyramidal TIFFs, and writing them.

:func:`open_slide` returns a :class:`SlideReader`. Regions are addressed as in OpenSlide and
TIAToolbox: a top-left in level-0 pixels, a level, and a size in that level's pixels. Pixels
outside the image come back as ``fill`` (255, white, for slides; 0 for label masks).

Every read returns the level's own stored pixels, never resampled ones. Real pyramids have
non-integer downsamples (an Aperio level of 2221 px under 4443 px is 2.0005×), and OpenSlide
interpolates a read whose level-0 origin does not fall on a stored pixel of that level; so TIFF
slides (SVS included) are decoded here with tifffile, tile by tile, at level coordinates, and
OpenSlide serves only the formats tifffile cannot parse, at levels with an integer downsample.

Only 8-bit RGB(A) brightfield slides are accepted (label masks may also be 8-bit greyscale):
16-bit, fluorescence (1, 2 or 4+ channels), palette or CMYK images are a :class:`DataError`
naming what the file is. Only true pyramid levels count as levels (see :func:`pyramid_pages`).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchallenge.core.errors import DataError

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""The first four bytes of a classic or BigTIFF file, either byte order."""
NOT_A_LEVEL = re.compile(r"\b(label|macro|thumbnail|overview)\b")
"""ImageDescription words of associated images stored beside the pyramid (Aperio SVS and others)."""
APERIO_YCBCR_J2K = 33003
"""TIFF compression of Aperio JPEG 2000 tiles whose three components are Y, Cb, Cr (not RGB)."""


def downsample_of(base: tuple[int, int], level: tuple[int, int]) -> float:
    """OpenSlide's level downsample: the mean of the width and height ratios (level-0 px per level px)."""
    return (base[0] / level[0] + base[1] / level[1]) / 2


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 full-range YCbCr → RGB uint8, as OpenSlide converts Aperio 33003 tiles.

    OpenSlide's tables (``src/make-tables.c``): red and blue add ``round(1.402·Cr′)`` and
    ``round(1.772·Cb′)`` (C ``round``: halves away from zero; Cb′ = Cb − 128); green adds the two
    16-bit fixed-point terms ``round(2¹⁶·(0.5 − 0.34414·Cb′))`` and ``round(−2¹⁶·0.71414·Cr′)``
    shifted down by 16 bits; then clamped. Equal to OpenSlide for every (Cb, Cr) pair (tested).
    """

    def c_round(value: np.ndarray) -> np.ndarray:
        return (np.sign(value) * np.floor(np.abs(value) + 0.5)).astype(np.int64)

    y = ycc[..., 0].astype(np.int64)
    cb = ycc[..., 1].astype(np.float64) - 128
    cr = ycc[..., 2].astype(np.float64) - 128
    red = y + c_round(1.402 * cr)
    green = y + ((c_round(65536 * (0.5 - 0.34414 * cb)) + c_round(65536 * -0.71414 * cr)) >> 16)
    blue = y + c_round(1.772 * cb)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def describe_pixels(page: Any) -> str:
    """What a TIFF page holds, for messages: ``uint16, 3 samples per pixel, photometric RGB``."""
    photometric = getattr(page.photometric, "name", str(page.photometric))
    samples = page.samplesperpixel
    return f"{page.dtype}, {samples} sample{'s' if samples != 1 else ''} per pixel, photometric {photometric}"


def check_brightfield(path: Path, page: Any, n_images: int, labels: bool = False) -> None:
    """Refuse a baseline TIFF page that is not 8-bit RGB(A) brightfield (``labels``: 8-bit grey too).

    Args:
        page: the tifffile page of level 0.
        n_images: images of that size in its series (several: channels, focal planes, time points).

    Raises:
        DataError: naming dtype, samples per pixel and photometric interpretation.
    """
    from tifffile import PHOTOMETRIC

    samples, photometric = page.samplesperpixel, page.photometric
    eight_bit = page.dtype == np.uint8 and page.bitspersample == 8
    rgb = photometric == PHOTOMETRIC.RGB and samples in (3, 4)
    jpeg_ycbcr = photometric == PHOTOMETRIC.YCBCR and samples == 3 and page.compression == 7  # decoded to RGB
    grey = labels and photometric in (PHOTOMETRIC.MINISBLACK, PHOTOMETRIC.MINISWHITE) and samples == 1
    if eight_bit and n_images == 1 and (rgb or jpeg_ycbcr or grey):
        return
    what = describe_pixels(page)
    if n_images > 1:
        what += f", {n_images} images of {page.imagewidth}×{page.imagelength} px (channels, planes or time points)"
    accepted = "8-bit RGB(A) brightfield slide" + (" or 8-bit greyscale label mask" if labels else "")
    raise DataError(path, f"not an {accepted} ({what}): convert it to 8-bit RGB first")


def _is_level(base: Any, previous: Any, page: Any) -> bool:
    """Whether ``page`` is the pyramid level after ``previous``: same pixel kind as the base, smaller in
    both directions, the base's aspect ratio (each side rounded by < 1 px), and not an associated image."""
    same_kind = (page.dtype == base.dtype and page.samplesperpixel == base.samplesperpixel
                 and page.photometric == base.photometric and page.planarconfig == base.planarconfig
                 and page.imagedepth == 1)
    smaller = page.imagewidth < previous.imagewidth and page.imagelength < previous.imagelength
    if not (same_kind and smaller) or NOT_A_LEVEL.search((page.description or "").lower()):
        return False
    ds_w, ds_h = base.imagewidth / page.imagewidth, base.imagelength / page.imagelength
    return abs(ds_w - ds_h) <= ds_w / page.imagewidth + ds_h / page.imagelength + 1e-9


def pyramid_pages(tif: Any, path: Path, labels: bool = False) -> list[Any]:
    """The true pyramid levels of a parsed TIFF, largest first (tifffile pages).

    Level 0 is the first series' baseline (tifffile already leaves out SVS thumbnail, label and macro
    images, and finds OME/pyramidal SubIFDs). Candidates are that series' levels plus any tiled page
    flagged reduced-resolution (NewSubfileType bit 0) that tifffile did not group; each must pass
    :func:`_is_level`. Pages that are other channels, labels, macros or thumbnails are not levels.

    Raises:
        DataError: the baseline is not 8-bit RGB(A) brightfield (:func:`check_brightfield`).
    """
    from tifffile import TiffPage

    series = tif.series[0]
    base = series.levels[0].keyframe
    n_images = int(np.prod(series.levels[0].shape)) // max(int(np.prod(base.shape)), 1)
    check_brightfield(path, base, n_images, labels)
    candidates = [level.keyframe for level in series.levels[1:]]
    candidates += [page for page in tif.pages
                   if isinstance(page, TiffPage) and page.is_reduced and page.is_tiled]
    levels, seen = [base], {base.offset}
    for page in sorted(candidates, key=lambda p: (-p.imagewidth, -p.imagelength)):
        if page.offset not in seen and _is_level(base, levels[-1], page):
            levels.append(page)
            seen.add(page.offset)
    return levels


class SlideReader:
    """A pyramidal slide: level sizes, downsamples and region reads (H×W×3 uint8 RGB).

    Backends: any TIFF tifffile parses (generic pyramids such as PANDA's and MIDOG's, Aperio SVS,
    OME, ...) through tifffile, decoding only the TIFF tiles a read touches (a stripped page is
    decoded whole, once); any other format OpenSlide opens, at levels with an integer downsample.
    ``labels=True`` opens a label mask: 8-bit greyscale is accepted too (read into all 3 channels).
    """

    TILE_CACHE = 32  # decoded TIFF tiles kept (32 × 512² RGB ≈ 25 MB at most)

    def __init__(self, path: Path, labels: bool = False) -> None:
        self.path = Path(path)
        self.labels = labels
        self._osr = None
        self._pages: list[Any] = []
        self._tif = None
        self._tiles: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._page_cache: tuple[int, np.ndarray] | None = None
        self._jpeg_cs: dict[int, tuple[Any, Any] | None] = {}
        self._spare: np.ndarray | None = None
        if not self.path.is_file():
            raise DataError(self.path, "slide not found")
        with open(self.path, "rb") as handle:
            is_tiff = handle.read(4) in TIFF_MAGIC
        tiff_problem = self._open_tiff() if is_tiff else "not a readable TIFF (no TIFF header)"
        if tiff_problem is not None:
            self._open_openslide(tiff_problem)

    def _open_tiff(self) -> str | None:
        """Open through tifffile; None on success, else why tifffile could not (OpenSlide is tried next)."""
        import tifffile

        logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # we report problems ourselves
        try:
            tif = tifffile.TiffFile(self.path)
        except Exception as err:  # tifffile raises many types for corrupt input; all mean "not parseable"
            return f"not a readable TIFF ({type(err).__name__}: {str(err)[:100]})"
        try:
            pages = pyramid_pages(tif, self.path, self.labels)
        except DataError:
            tif.close()
            raise
        except Exception as err:  # a corrupt directory
            tif.close()
            return f"not a readable TIFF ({type(err).__name__}: {str(err)[:100]})"
        self._tif, self._pages = tif, pages
        self.level_dimensions: list[tuple[int, int]] = [(int(p.imagewidth), int(p.imagelength)) for p in pages]
        self.level_downsamples: list[float] = [downsample_of(self.level_dimensions[0], d)
                                               for d in self.level_dimensions]
        return None

    def _open_openslide(self, tiff_problem: str) -> None:
        import openslide

        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise DataError(self.path, f"{tiff_problem}, and not a slide OpenSlide reads") from err
        except openslide.OpenSlideError as err:
            raise DataError(self.path, f"cannot open slide ({err})") from err
        self.level_dimensions = [tuple(d) for d in self._osr.level_dimensions]
        self.level_downsamples = [float(d) for d in self._osr.level_downsamples]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def backend(self) -> str:
        """``tifffile`` or ``openslide``."""
        return "openslide" if self._osr is not None else "tifffile"

    @property
    def tiled(self) -> bool:
        """True when every level is read tile by tile (tiled TIFF pages): a read decodes only what it touches."""
        return self._osr is None and all(p.is_tiled and p.planarconfig == 1 for p in self._pages)

    _tiled = tiled  # the earlier private name (MIDOG's tests check it)

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int, fill: int = 255,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Read ``height×width×3`` uint8 RGB of ``level``'s stored pixels; (x0, y0) is the top-left in level-0 px.

        The level's own top-left is ``round(x0 / downsample)``, so ``x0 = round(x * downsample)`` reads
        from level pixel ``x`` exactly, for any downsample ≥ 1. Parts outside the slide are ``fill``.
        ``out``: an array of that shape and dtype to write into (and return) instead of a new one.
        """
        if not 0 <= level < self.level_count:
            raise DataError(self.path, f"level {level} does not exist (the slide has {self.level_count})")
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        # clip to the level (OpenSlide's padding is transparent black; tifffile has none)
        cx0, cy0, cx1, cy1 = max(lx, 0), max(ly, 0), min(lx + width, lw), min(ly + height, lh)
        if out is None or out.shape != (height, width, 3) or out.dtype != np.uint8:
            out = np.empty((height, width, 3), dtype=np.uint8)
        if cx1 <= cx0 or cy1 <= cy0:
            out[...] = fill
            return out
        if (cx0, cy0, cx1, cy1) != (lx, ly, lx + width, ly + height):  # part outside the level
            out[...] = fill
        if self._osr is not None:
            pixels = self._read_openslide(level, cx0, cy0, cx1 - cx0, cy1 - cy0, fill)
        else:
            pixels = self._read_tiff(level, cx0, cy0, cx1, cy1)
        out[cy0 - ly : cy1 - ly, cx0 - lx : cx1 - lx] = pixels
        return out

    def read_level(self, level: int, fill: int = 255) -> np.ndarray:
        """The whole level as H×W×3 uint8."""
        if not 0 <= level < self.level_count:
            raise DataError(self.path, f"level {level} does not exist (the slide has {self.level_count})")
        w, h = self.level_dimensions[level]
        return self.read_region(0, 0, level, w, h, fill)

    def _read_openslide(self, level: int, lx: int, ly: int, width: int, height: int, fill: int) -> np.ndarray:
        """``height×width×3`` from level pixel (lx, ly); OpenSlide takes level-0 coordinates."""
        import openslide

        ds = self.level_downsamples[level]
        if not ds.is_integer():  # OpenSlide would interpolate between the level's pixels
            raise DataError(self.path, f"level {level} has a non-integer downsample ({ds:.6g}) that OpenSlide"
                                       " reads resampled, not as stored: use level 0 or another level")
        try:
            region = self._osr.read_region((lx * int(ds), ly * int(ds)), level, (width, height))
        except openslide.OpenSlideError as err:
            raise DataError(self.path, f"cannot read slide pixels (truncated or corrupt: {err})") from err
        rgba = np.asarray(region)
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = fill
        return rgb

    def _read_tiff(self, level: int, cx0: int, cy0: int, cx1: int, cy1: int) -> np.ndarray:
        """Stored pixels [cy0:cy1, cx0:cx1] of ``level`` (inside the level) as H×W×3 uint8."""
        page = self._pages[level]
        if not (page.is_tiled and page.planarconfig == 1):
            return self._whole_page(level)[cy0:cy1, cx0:cx1]
        out = np.empty((cy1 - cy0, cx1 - cx0, 3), dtype=np.uint8)
        th, tw = page.tilelength, page.tilewidth
        for ty in range(cy0 // th, (cy1 - 1) // th + 1):
            for tx in range(cx0 // tw, (cx1 - 1) // tw + 1):
                tile = self._decoded_tile(level, ty, tx)
                ya, yb = max(cy0, ty * th), min(cy1, (ty + 1) * th)
                xa, xb = max(cx0, tx * tw), min(cx1, (tx + 1) * tw)
                out[ya - cy0 : yb - cy0, xa - cx0 : xb - cx0] = tile[ya - ty * th : yb - ty * th, xa - tx * tw : xb - tx * tw]
        return out

    def _as_rgb(self, page: Any, pixels: np.ndarray) -> np.ndarray:
        """Decoded H×W×S samples → H×W×3 RGB: grey repeated, alpha dropped, Aperio YCbCr converted."""
        if pixels.shape[-1] == 1:
            return np.repeat(pixels, 3, axis=-1)
        if page.compression == APERIO_YCBCR_J2K:
            return ycbcr_to_rgb(pixels[..., :3])
        return np.ascontiguousarray(pixels[..., :3])

    def _decoded_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        """One TIFF tile of ``level`` decoded to T×T×3 (cached, least recently used dropped first)."""
        key = (level, ty, tx)
        if key in self._tiles:
            self._tiles.move_to_end(key)
            return self._tiles[key]
        page = self._pages[level]
        index = ty * -(-page.imagewidth // page.tilewidth) + tx
        handle = self._tif.filehandle
        try:
            handle.seek(page.dataoffsets[index])
            data = handle.read(page.databytecounts[index])
            tile = self._decode_jpeg(level, data)
            if tile is None:
                tile = page.decode(data, index, jpegtables=page.jpegtables)[0]
                tile = None if tile is None else self._as_rgb(page, tile[0])
        except Exception as err:  # any decode failure is a truncated or corrupt file
            raise DataError(self.path, f"cannot decode TIFF tile {index} of level {level} (truncated or corrupt:"
                                       f" {type(err).__name__}: {str(err)[:80]})") from err
        if tile is None or len(data) < page.databytecounts[index]:
            raise DataError(self.path, f"TIFF tile {index} of level {level} is truncated")
        self._tiles[key] = tile
        if len(self._tiles) > self.TILE_CACHE:
            self._spare = self._tiles.popitem(last=False)[1]  # its memory takes the next decode
        return tile

    def _jpeg_colorspaces(self, level: int) -> tuple[Any, Any] | None:
        """(colorspace, outcolorspace) to decode ``level``'s tiles with imagecodecs directly: 8-bit,
        3-sample, interleaved JPEG tiles only (None otherwise: tifffile's own decode is used)."""
        if level not in self._jpeg_cs:
            page, rule = self._pages[level], None
            if page.compression == 7 and page.bitspersample == 8 and page.samplesperpixel == 3 \
                    and page.planarconfig == 1 and page.jpegheader is None:
                from tifffile.tifffile import jpeg_decode_colorspace

                # tifffile's own rule, so the pixels are those page.decode returns (tested)
                rule = jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
            self._jpeg_cs[level] = rule
        return self._jpeg_cs[level]

    def _decode_jpeg(self, level: int, data: bytes) -> np.ndarray | None:
        """A JPEG tile decoded by libjpeg-turbo straight into a reused buffer (T×T×3), or None where
        :meth:`_jpeg_colorspaces` declines. A fresh 0.75 MB array per tile costs page faults on every
        decode; the tile evicted last from the cache is written over instead (never handed out:
        reads copy out of cached tiles)."""
        rule = self._jpeg_colorspaces(level)
        if rule is None or not data:
            return None
        import imagecodecs

        page = self._pages[level]
        shape = (page.tilelength, page.tilewidth, 3)
        out, self._spare = self._spare, None
        if out is None or out.shape != shape:
            out = np.empty(shape, np.uint8)
        tile = imagecodecs.jpeg8_decode(data, tables=page.jpegtables, colorspace=rule[0], outcolorspace=rule[1],
                                        out=out)
        return tile if tile.shape == shape else None

    def _whole_page(self, level: int) -> np.ndarray:
        """An untiled (or separate-plane) level decoded whole, once, as H×W×3."""
        if self._page_cache is None or self._page_cache[0] != level:
            page = self._pages[level]
            try:
                array = page.asarray()
            except Exception as err:  # any decode failure is a corrupt file
                raise DataError(self.path, f"cannot decode TIFF pixels of level {level} ({type(err).__name__})") from err
            if array.ndim == 2:
                array = array[..., None]
            elif page.planarconfig == 2:  # samples first: S×H×W
                array = np.moveaxis(array, 0, -1)
            self._page_cache = (level, self._as_rgb(page, array))
        return self._page_cache[1]

    def close(self) -> None:
        if self._osr is not None:
            self._osr.close()
        if self._tif is not None:
            self._tif.close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path, labels: bool = False) -> SlideReader:
    """Open a slide (``labels``: a label mask) for region reads.

    Raises:
        DataError: a missing, truncated or unreadable file, or one that is not 8-bit RGB(A) brightfield.
    """
    return SlideReader(Path(path), labels=labels)


def downsample_rgb(image: np.ndarray, factor: int, mode: str = "mean") -> np.ndarray:
    """Shrink H×W×C by an integer factor: area mean (images) or top-left sample (labels)."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    image = image[:h, :w]
    if mode == "nearest":
        return np.ascontiguousarray(image[::factor, ::factor])
    blocks = image.reshape(h // factor, factor, w // factor, factor, -1).astype(np.float32)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def write_pyramid_tiff(
    path: str | Path,
    level0: np.ndarray,
    downsamples: Sequence[int] = (1, 4, 16),
    tile: int = 512,
    labels: bool = False,
    quality: int = 90,
) -> None:
    """Write a tiled pyramidal TIFF that OpenSlide opens (one page per level), atomically.

    Args:
        level0: H×W×3 uint8 RGB.
        downsamples: level downsamples, the first 1.
        labels: a label mask (label in the red channel): lossless deflate and nearest
            downsampling, instead of JPEG and area averaging.
    """
    import tifffile

    from medchallenge.core.io import atomic_path  # pandas behind it: not on the read path

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for i, ds in enumerate(downsamples):
            image = level0 if ds == 1 else downsample_rgb(level0, int(ds), "nearest" if labels else "mean")
            kwargs = {"compression": "zlib"} if labels else {"compression": "jpeg", "compressionargs": {"level": quality}}
            tif.write(
                image,
                tile=(tile, tile),
                photometric="rgb",
                subfiletype=0 if i == 0 else 1,
                resolution=(1e4 / 0.5 / ds, 1e4 / 0.5 / ds),
                resolutionunit="CENTIMETER",
                metadata=None,
                **kwargs,
            )
