"""``midog tile``: rewrite the images as tiled TIFFs so training reads patches without decoding whole images.

The real MIDOG TIFFs store ~7215×5412 px in strips; a patch read from them decodes the whole
image. ``tile`` re-encodes each image once as a tiled TIFF (256 px tiles, lossless deflate by
default, keeping the resolution tags' pixel size) in the output folder and copies MIDOG.json beside
them; point ``train`` and ``predict`` at that folder. Idempotent (finished images are skipped) and ``--part K/N`` for array jobs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medchallenge.core import console
from medchallenge.core.errors import DataError
from medchallenge.core.io import atomic_path
from medchallenge.core.parts import select_part
from medchallenge.core.wsi import open_slide
from medchallenge.midog.submission import tiff_spacing_mm


def tile_images(data: Path, out: Path, tile: int = 256, compression: str = "zlib", part: str | None = None,
                overwrite: bool = False) -> list[Path]:
    """Re-encode every ``*.tif[f]`` of ``data`` as a tiled TIFF in ``out`` (+ a copy of MIDOG.json)."""
    import tifffile

    data, out = Path(data), Path(out)
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise DataError(data, "no .tiff images")
    out.mkdir(parents=True, exist_ok=True)
    if (data / "MIDOG.json").is_file() and data.resolve() != out.resolve():
        shutil.copyfile(data / "MIDOG.json", out / "MIDOG.json")
    written = []
    for path in console.track(select_part(files, part), "tile"):
        target = out / path.name
        if target.exists() and not overwrite:
            continue
        with open_slide(path) as reader:
            image = reader.read_level(0)
        with atomic_path(target) as tmp:
            tifffile.imwrite(tmp, image, tile=(tile, tile), photometric="rgb", compression=compression,
                             **_resolution_of(path))
        written.append(target)
    console.log(f"wrote {len(written)} tiled image(s) to {out}")
    return written


def _resolution_of(path: Path) -> dict:
    """The source's resolution tags as ``tifffile.imwrite`` keywords (none when it has none): the
    tiled copy keeps the pixel size that grand-challenge millimetres are computed from."""
    spacing = tiff_spacing_mm(path)
    if spacing is None:
        return {}
    return {"resolution": (10.0 / spacing[0], 10.0 / spacing[1]), "resolutionunit": "CENTIMETER"}
