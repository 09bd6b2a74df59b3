"""Whole-slide images: reading regions of pyramidal TIFFs, and writing them.

:func:`open_slide` returns a :class:`SlideReader` backed by OpenSlide, or by tifffile for plain
TIFFs OpenSlide does not accept (each page a level). Regions are addressed as in OpenSlide and
TIAToolbox: a top-left in level-0 pixels, a level, and a size in that level's pixels. Pixels
outside the image come back as ``fill`` (255, white, for slides; 0 for label masks).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path


class SlideReader:
    """A pyramidal slide: level sizes, downsamples and region reads (RGB uint8).

    Backends, in order: tiled TIFF pyramids (PANDA's, MIDOG's) through tifffile, decoding only
    the TIFF tiles a read touches; anything OpenSlide opens; any other TIFF through tifffile,
    decoding a whole page.
    """

    TILE_CACHE = 32  # decoded TIFF tiles kept (32 × 512² RGB ≈ 25 MB at most)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._osr = None
        self._pages: list = []
        self._tif = None
        self._tiles: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._tiled = False
        self._page_cache: tuple[int, np.ndarray] | None = None
        if not self.path.is_file():
            raise DataError(self.path, "slide not found")
        if self.path.suffix.lower() in (".tif", ".tiff") and self._open_tiled_tiff():
            return
        import openslide

        try:
            self._osr = openslide.OpenSlide(str(self.path))
            self.level_dimensions: list[tuple[int, int]] = [tuple(d) for d in self._osr.level_dimensions]
            self.level_downsamples: list[float] = [float(d) for d in self._osr.level_downsamples]
            return
        except openslide.OpenSlideUnsupportedFormatError:
            pass  # not a pyramid OpenSlide knows: try a plain TIFF
        except openslide.OpenSlideError as err:
            raise DataError(self.path, f"cannot open slide ({err})") from err
        import tifffile

        logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # we report problems ourselves
        try:
            self._tif = tifffile.TiffFile(self.path)
            pages = [p for p in self._tif.pages if p.ndim >= 2]
            if pages:
                _ = pages[0].shape[1]
        except Exception as err:  # tifffile raises many types for corrupt input; all mean "bad file"
            raise DataError(self.path, f"not a readable TIFF ({type(err).__name__}: {str(err)[:100]})") from err
        if not pages or any(p.ndim < 2 for p in pages):
            raise DataError(self.path, "truncated or corrupt TIFF (no readable image pages)")
        pages.sort(key=lambda p: -p.shape[1])
        self._pages = pages
        self.level_dimensions = [(int(p.shape[1]), int(p.shape[0])) for p in pages]
        self.level_downsamples = [self.level_dimensions[0][0] / d[0] for d in self.level_dimensions]

    def _open_tiled_tiff(self) -> bool:
        """Use tifffile, decoding only the TIFF tiles a read touches, when every level is a tiled page."""
        import tifffile

        logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # we report problems ourselves
        try:
            tif = tifffile.TiffFile(self.path)
        except Exception:  # not parseable here: OpenSlide (or the error path) decides
            return False
        try:
            pages = [p for p in tif.pages if p.ndim == 3 and p.shape[2] in (3, 4)]
            if not pages or not all(p.is_tiled for p in pages) or tif.series[0].ndim != 3:
                tif.close()
                return False
        except Exception:  # a corrupt directory: let the other paths report it
            tif.close()
            return False
        width0 = pages[0].shape[1] / pages[0].shape[0]
        pages = [p for p in pages if abs(p.shape[1] / p.shape[0] - width0) < 0.05]  # drop thumbnails/labels
        pages.sort(key=lambda p: -p.shape[1])
        self._tif, self._pages, self._tiled = tif, pages, True
        self.level_dimensions = [(int(p.shape[1]), int(p.shape[0])) for p in pages]
        self.level_downsamples = [self.level_dimensions[0][0] / d[0] for d in self.level_dimensions]
        return True

    def _decoded_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        """One TIFF tile of ``level`` decoded (cached, least recently used dropped first)."""
        key = (level, ty, tx)
        if key in self._tiles:
            self._tiles.move_to_end(key)
            return self._tiles[key]
        page = self._pages[level]
        across = -(-page.shape[1] // page.tilewidth)
        index = ty * across + tx
        handle = self._tif.filehandle
        try:
            handle.seek(page.dataoffsets[index])
            data = handle.read(page.databytecounts[index])
            tile = page.decode(data, index, jpegtables=page.jpegtables)[0]
        except Exception as err:  # any decode failure is a truncated or corrupt file
            raise DataError(self.path, f"cannot decode TIFF tile {index} of level {level} (truncated or corrupt:"
                                       f" {type(err).__name__})") from err
        if tile is None or len(data) < page.databytecounts[index]:
            raise DataError(self.path, f"TIFF tile {index} of level {level} is truncated")
        tile = tile[0, :, :, :3]
        self._tiles[key] = tile
        if len(self._tiles) > self.TILE_CACHE:
            self._tiles.popitem(last=False)
        return tile

    def _read_tiled(self, x0: int, y0: int, level: int, width: int, height: int, fill: int) -> np.ndarray:
        out = np.full((height, width, 3), fill, dtype=np.uint8)
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        cx0, cy0, cx1, cy1 = max(lx, 0), max(ly, 0), min(lx + width, lw), min(ly + height, lh)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        page = self._pages[level]
        th, tw = page.tilelength, page.tilewidth
        for ty in range(cy0 // th, (cy1 - 1) // th + 1):
            for tx in range(cx0 // tw, (cx1 - 1) // tw + 1):
                tile = self._decoded_tile(level, ty, tx)
                ya, yb = max(cy0, ty * th), min(cy1, (ty + 1) * th)
                xa, xb = max(cx0, tx * tw), min(cx1, (tx + 1) * tw)
                out[ya - ly : yb - ly, xa - lx : xb - lx] = tile[ya - ty * th : yb - ty * th, xa - tx * tw : xb - tx * tw]
        return out

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(self, x0: int, y0: int, level: int, width: int, height: int, fill: int = 255) -> np.ndarray:
        """Read ``height×width×3`` uint8 RGB at ``level``; (x0, y0) is the top-left in level-0 px.

        Parts outside the slide are ``fill``.
        """
        if not 0 <= level < self.level_count:
            raise DataError(self.path, f"level {level} does not exist (the slide has {self.level_count})")
        if self._tiled:
            return self._read_tiled(x0, y0, level, width, height, fill)
        if self._osr is not None:
            return self._read_openslide(x0, y0, level, width, height, fill)
        return self._read_tifffile(x0, y0, level, width, height, fill)

    def read_level(self, level: int, fill: int = 255) -> np.ndarray:
        """The whole level as H×W×3 uint8."""
        if not 0 <= level < self.level_count:
            raise DataError(self.path, f"level {level} does not exist (the slide has {self.level_count})")
        w, h = self.level_dimensions[level]
        return self.read_region(0, 0, level, w, h, fill)

    def _read_openslide(self, x0: int, y0: int, level: int, width: int, height: int, fill: int) -> np.ndarray:
        import openslide

        out = np.full((height, width, 3), fill, dtype=np.uint8)
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        # clip to the level so OpenSlide never pads (its padding is transparent black)
        cx0, cy0 = max(lx, 0), max(ly, 0)
        cx1, cy1 = min(lx + width, lw), min(ly + height, lh)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        try:
            region = self._osr.read_region((int(round(cx0 * ds)), int(round(cy0 * ds))), level, (cx1 - cx0, cy1 - cy0))
        except openslide.OpenSlideError as err:
            raise DataError(self.path, f"cannot read slide pixels (truncated or corrupt: {err})") from err
        rgba = np.asarray(region)
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = fill
        out[cy0 - ly : cy1 - ly, cx0 - lx : cx1 - lx] = rgb
        return out

    def _read_tifffile(self, x0: int, y0: int, level: int, width: int, height: int, fill: int) -> np.ndarray:
        out = np.full((height, width, 3), fill, dtype=np.uint8)
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        cx0, cy0, cx1, cy1 = max(lx, 0), max(ly, 0), min(lx + width, lw), min(ly + height, lh)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        if self._page_cache is None or self._page_cache[0] != level:  # untiled: decode the page once
            try:
                self._page_cache = (level, self._pages[level].asarray())
            except Exception as err:  # any decode failure is a corrupt file
                raise DataError(self.path, f"cannot decode TIFF pixels ({type(err).__name__})") from err
        array = self._page_cache[1]
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        out[cy0 - ly : cy1 - ly, cx0 - lx : cx1 - lx] = array[cy0:cy1, cx0:cx1, :3]
        return out

    def close(self) -> None:
        if self._osr is not None:
            self._osr.close()
        if self._tif is not None:
            self._tif.close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: str | Path) -> SlideReader:
    """Open a slide for region reads; a missing, truncated or non-TIFF file is a DataError."""
    return SlideReader(Path(path))


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
