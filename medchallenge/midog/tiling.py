"""``midog tile``: rewrite the images as tiled TIFFs so training reads patches without decoding whole images.

The real MIDOG TIFFs store ~7215×5412 px in strips; a patch read from them decodes the whole
image. ``tile`` re-encodes each image once as a tiled TIFF (256 px tiles, lossless deflate by
default, keeping the resolution tags' pixel size) in the cache folder and copies MIDOG.json beside
them; point ``train --cache`` (or ``predict --data``) at that folder. The cache is a
:class:`~medchallenge.core.cache.CacheDir` of kind ``midog-tiff``: a rerun with another TIFF tile
size or compression is an error naming it unless ``--overwrite`` (which re-encodes), finished
images are skipped, ``--part K/N`` splits the images across array jobs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from medchallenge.core import console
from medchallenge.core.cache import CacheDir
from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path
from medchallenge.core.parallel import map_jobs
from medchallenge.core.wsi import SlideReader, open_slide
from medchallenge.midog.data import load_midog_json
from medchallenge.midog.submission import tiff_spacing_mm

CACHE_KIND = "midog-tiff"


@dataclass(frozen=True)
class TileJob:
    """One image to re-encode (picklable, for ``--workers``)."""

    source: Path
    target: Path
    tile: int
    compression: str
    size: tuple[int, int] | None = None  # (width, height) MIDOG.json gives the image, checked before encoding


def tile_images(data: Path, cache: Path, tile: int = 256, compression: str = "zlib", part: str | None = None,
                overwrite: bool = False, workers: int = 0) -> list[Path]:
    """Re-encode every ``*.tif[f]`` of ``data`` as a tiled TIFF in ``cache`` (+ a copy of MIDOG.json).

    MIDOG.json, when present, is parsed first (a broken file stops here, not hours later in
    ``train``), and each image must have the size MIDOG.json gives it.

    Raises:
        DataError: no images in ``data``, a broken MIDOG.json, an image of another size than its entry.
        OptionError: ``cache`` was made with another tile size or compression and ``overwrite`` is off.
    """
    data, cache = Path(data), Path(cache)
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise DataError(data, "no .tiff images")
    sizes = {}
    if (data / "MIDOG.json").is_file():
        sizes = {img.file_name: (img.width, img.height) for img in load_midog_json(data / "MIDOG.json").values()}
    store = CacheDir(cache, CACHE_KIND)
    store.open_for_writing({"tiff_tile": tile, "compression": compression}, overwrite)
    if (data / "MIDOG.json").is_file() and data.resolve() != cache.resolve():
        shutil.copyfile(data / "MIDOG.json", cache / "MIDOG.json")
    todo = store.pending(files, lambda path: cache / path.name, part, overwrite)
    jobs = [TileJob(path, cache / path.name, tile, compression, sizes.get(path.name)) for path in todo]
    written = map_jobs(tile_one, jobs, workers, "tile")
    console.log(f"wrote {len(written)} tiled image(s) to {cache}")
    return written


def tile_one(job: TileJob) -> Path:
    """Write one tiled copy atomically (a killed run never leaves a file that looks finished)."""
    import tifffile

    with open_slide(job.source) as reader:
        check_size(reader, job.size)
        image = reader.read_level(0)
    with atomic_path(job.target) as tmp:
        tifffile.imwrite(tmp, image, tile=(job.tile, job.tile), photometric="rgb", compression=job.compression,
                         **_resolution_of(job.source))
    return job.target


def check_size(reader: SlideReader, size: tuple[int, int] | None) -> None:
    """Refuse an image whose size is not its MIDOG.json entry's ``(width, height)``: its boxes would
    be placed on another image (a renamed or re-exported file)."""
    actual = tuple(reader.level_dimensions[0])
    if size is not None and actual != tuple(size):
        raise DataError(reader.path, f"{actual[0]}×{actual[1]} px, but MIDOG.json gives {size[0]}×{size[1]} px")


def _resolution_of(path: Path) -> dict:
    """The source's resolution tags as ``tifffile.imwrite`` keywords (none when it has none): the
    tiled copy keeps the pixel size that grand-challenge millimetres are computed from."""
    spacing = tiff_spacing_mm(path)
    if spacing is None:
        return {}
    return {"resolution": (10.0 / spacing[0], 10.0 / spacing[1]), "resolutionunit": "CENTIMETER"}
