"""Tile selection (the public 36×256 baseline) and the tile cache training reads.

Selection, as in the baseline's ``get_tiles``: pad the level with white to a multiple of the tile
size T (``pad = (T - h % T) % T + (T * mode) // 2``, split floor/ceil over the two sides, so
mode 2 shifts the grid by half a tile), cut the grid, rank tiles by ascending pixel sum (most
tissue first; ties by grid index, a stable sort), keep N, and fill with white tiles when the grid
has fewer than N. A tile "carries tissue" when its mean is below :data:`TISSUE_MEAN` (JPEG noise
keeps white background a little under 255).

:func:`tile_slide` never decodes the whole level: it estimates every grid tile's sum from a
coarser pyramid level, reads only the candidate tiles at the requested level and ranks them by
their exact sums. Each estimate comes with its spread: how far it moves when the tile's coarse
footprint shifts by one coarse pixel (a pyramid whose level sizes were rounded drifts by that much;
large at tissue edges, small inside tissue). Candidates are the N best estimates plus every tile
whose estimate minus its spread lies within :data:`CANDIDATE_MARGIN` of the N-th; then, until
none is left, every unread tile whose estimate minus its spread lies within a margin of the exact
N-th mean is read too: :data:`CANDIDATE_MARGIN`, or twice the largest error the spreads did not
explain on this slide's read tiles. So a slide whose coarse level estimates badly (small tiles,
rounded level sizes) reads more instead of choosing other tiles. When the selection reaches near-white tiles
(little tissue), every tile inside the image is read one by one (never the whole level at once).
Tiles entirely outside the image are white by construction and need no read. The result equals
:func:`select_tiles_whole_level` (tested on the project's sample slides and on outside-made ones
with pen lines and odd sizes).

Cache layout (one folder per tiling setting)::

    meta.json       core.cache.CacheDir format, kind "panda-tiles": settings split, level (the
                    level used), tile_size, n_tiles, mode; info level_option (what --level said:
                    a number or "auto"), downsample, data
    index.csv       image_id, data_provider, isup_grade (empty when unknown), n_tissue, has_mask
    tiles.csv       image_id, rank, x, y, fill  (x, y: top-left in level-0 px; fill: white filler)
    slides/{id}.npz tiles (N×T×T×3 uint8), masks (N×T×T uint8, when a mask exists), xs, ys, fill
"""

from __future__ import annotations

import heapq
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medchallenge.core.errors import DataError, OptionError
from medchallenge.core.wsi import SlideReader, open_slide

if TYPE_CHECKING:
    import pandas as pd

# pandas, rich (core.console), core.cache/io/parallel and panda.data are imported where used: a
# process that only tiles slides (tile_slide, the per-slide workers) starts without them (~1 s of
# imports on a loaded machine against ~0.5 s for numpy + tifffile).

CACHE_KIND = "panda-tiles"

TISSUE_MEAN = 240.0
"""A tile carries tissue when its mean intensity (0–255, over RGB) is below this."""
PREFERRED_LEVEL = 1
"""The level ``--level auto`` takes when every slide has it (PANDA's 4× level, the baseline's)."""
CANDIDATE_MARGIN = 0.5
"""Estimated-mean margin (intensity units) above the N-th estimate within which tiles are read
first, and the least margin above the exact N-th mean within which unread tiles are read after
(more where the slide's estimates err more, see ERROR_SAFETY). The estimate from a 4× coarser
level was within 0.3 of the exact mean on the sample slides and within 0.2-1.1 on outside-made
ones (256-px tiles); errors at tissue edges, from a pyramid whose level sizes were rounded, are
covered by each tile's shift spread (see _estimate_means). A margin of 4 read 297 tiles of a 51%
tissue slide where 0.5 reads 90."""
ERROR_SAFETY = 2.0
"""Unread tiles are ruled out only beyond this many times the largest estimate error seen on the
read tiles beyond their spreads."""


@dataclass
class SlideTiles:
    """A slide's selected tiles, in rank order (most tissue first).

    tiles: N×T×T×3 uint8; masks: N×T×T uint8 labels or None; xs, ys: top-left of each tile in
    level-0 px (negative where the padded grid starts before the image); fill: True for white
    filler tiles (no position); n_tissue: how many tiles carry tissue.
    """

    tiles: np.ndarray
    masks: np.ndarray | None
    xs: np.ndarray
    ys: np.ndarray
    fill: np.ndarray
    n_tissue: int


@dataclass(frozen=True)
class Grid:
    """The padded tile grid of one level: rows × cols tiles of T px, offset by the padding."""

    rows: int
    cols: int
    tile: int
    pad_top: int
    pad_left: int

    @classmethod
    def of(cls, height: int, width: int, tile: int, mode: int) -> Grid:
        pad_h = (tile - height % tile) % tile + (tile * mode) // 2
        pad_w = (tile - width % tile) % tile + (tile * mode) // 2
        return cls((height + pad_h) // tile, (width + pad_w) // tile, tile, pad_h // 2, pad_w // 2)

    def origin(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-left (x, y) of grid tiles (flat row-major indices) in this level's px."""
        r, c = np.divmod(index, self.cols)
        return c * self.tile - self.pad_left, r * self.tile - self.pad_top


def _rank(sums: np.ndarray, n_tiles: int) -> np.ndarray:
    return np.argsort(sums, kind="stable")[:n_tiles]


def select_tiles_whole_level(image: np.ndarray, tile: int, n_tiles: int, mode: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference selection on a whole decoded level (the baseline's method).

    Args:
        image: H×W×3 uint8, the whole level.

    Returns:
        (tiles N×T×T×3 uint8, grid indices N; -1 for white filler tiles).
    """
    h, w = image.shape[:2]
    grid = Grid.of(h, w, tile, mode)
    pad_h, pad_w = grid.rows * tile - h, grid.cols * tile - w
    padded = np.pad(image, [[grid.pad_top, pad_h - grid.pad_top], [grid.pad_left, pad_w - grid.pad_left], [0, 0]],
                    constant_values=255)
    tiles = padded.reshape(grid.rows, tile, grid.cols, tile, 3).transpose(0, 2, 1, 3, 4).reshape(-1, tile, tile, 3)
    sums = tiles.reshape(len(tiles), -1).sum(axis=1, dtype=np.int64)
    index = _rank(sums, n_tiles)
    out = tiles[index]
    if len(out) < n_tiles:
        out = np.concatenate([out, np.full((n_tiles - len(out), tile, tile, 3), 255, np.uint8)])
        index = np.concatenate([index, np.full(n_tiles - len(index), -1)])
    return out, index


def _band_sums(rgb: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Column sums over RGB of the row bands [edges[i], edges[i+1]) of an H×W×3 uint8 image: k×W int64.

    ``edges``: k+1 non-decreasing row indices in [0, H]; an empty band sums to 0. One pass over a
    uint16 copy, a band at a time (reduceat and cumsum along rows were 5-8× slower here).
    """
    flat = rgb.reshape(rgb.shape[0], -1).astype(np.uint16)
    out = np.zeros((len(edges) - 1, flat.shape[1]), np.int64)
    for i in np.flatnonzero(np.diff(edges) > 0):
        out[i] = flat[edges[i]:edges[i + 1]].sum(axis=0, dtype=np.uint32)
    return out.reshape(len(edges) - 1, rgb.shape[1], 3).sum(axis=2)


def _estimate_means(slide: SlideReader, level: int, coarse: int, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity of every grid tile estimated from level ``coarse``, and how far that estimate
    moves when the tile's coarse footprint shifts by one coarse pixel (both rows·cols,).

    Coarse pixel k covers level-0 [k·dc, (k+1)·dc); a tile takes the coarse pixels whose centres
    it holds, and counts the parts of them outside the image as white. Exact integer sums of the
    coarse pixels: row-band sums, then column ranges of those (no full-size cumulative copy).
    The shift bounds the error of a pyramid whose level sizes were rounded (a level-0 width of
    4·w₁ + 3 over a level 2 of ⌊w₀/16⌋: the levels drift apart by up to a coarse pixel across the
    slide); it is large at tissue edges and small inside uniform tissue.
    """
    ds_l = slide.level_downsamples[level]
    ds_c = slide.level_downsamples[coarse]
    rgb = slide.read_level(coarse)
    height, width = rgb.shape[:2]
    x_edges = (np.arange(grid.cols + 1) * grid.tile - grid.pad_left) * ds_l
    y_edges = (np.arange(grid.rows + 1) * grid.tile - grid.pad_top) * ds_l
    kx = np.ceil(x_edges / ds_c - 0.5).astype(np.int64)
    ky = np.ceil(y_edges / ds_c - 0.5).astype(np.int64)
    # one pass over the coarse level: row bands between every edge of the three row shifts, whose
    # running sums give each shift's bands (column sums over RGB, 0–765 a pixel)
    cuts = np.unique(np.concatenate([[0], *((ky + dy).clip(0, height) for dy in (-1, 0, 1))]))
    prefix = np.vstack([np.zeros((1, width), np.int64), np.cumsum(_band_sums(rgb, cuts), axis=0)])
    means = np.zeros(0)
    spread = np.zeros((grid.rows, grid.cols))
    for dy in (0, -1, 1):  # the unshifted footprint first
        bands = np.diff(prefix[np.searchsorted(cuts, (ky + dy).clip(0, height))], axis=0)  # rows×W
        cumulative = np.hstack([np.zeros((len(bands), 1), np.int64), np.cumsum(bands, axis=1)])
        for dx in (0, -1, 1):
            shifted = _footprint_means(cumulative, kx + dx, ky + dy, width, height)
            if dx == dy == 0:
                means = shifted
            np.maximum(spread, np.abs(shifted - means), out=spread)
    return means.reshape(-1), spread.reshape(-1)


def _footprint_means(cumulative: np.ndarray, kx: np.ndarray, ky: np.ndarray, width: int,
                     height: int) -> np.ndarray:
    """Tile means (rows×cols) from a coarse level's row-band column sums (cumulative along columns)
    over the coarse footprints [ky[i], ky[i+1]) × [kx[j], kx[j+1]); outside the level counts white."""
    kxc, kyc = kx.clip(0, width), ky.clip(0, height)
    inside_sum = np.diff(cumulative[:, kxc], axis=1)
    total = np.diff(ky)[:, None] * np.diff(kx)[None, :]
    inside = np.diff(kyc)[:, None] * np.diff(kxc)[None, :]
    sums = inside_sum + 765 * (total - inside)
    return np.where(total > 0, sums / np.maximum(total, 1) / 3.0, 255.0)


def _coarse_level(slide: SlideReader, level: int, tile: int) -> int | None:
    """The coarsest level where a tile still spans at least 4×4 px; None when there is none."""
    best = None
    for candidate in range(level + 1, slide.level_count):
        if tile * slide.level_downsamples[level] / slide.level_downsamples[candidate] >= 4:
            best = candidate
    return best


def _read_exact(slide: SlideReader, level: int, tile: int, xs: np.ndarray, ys: np.ndarray, candidates: np.ndarray,
                keep: int, sums: np.ndarray, best: dict[int, np.ndarray]) -> None:
    """Read the candidate tiles (grid indices; xs, ys: every grid tile's top-left in level px),
    write their exact pixel sums into ``sums`` and keep in ``best`` the pixels (T×T×3) of the best
    ``keep`` read so far (``best`` carries over between calls).

    Row-major, so neighbouring tiles share decoded TIFF tiles (each decoded once); a tile dropped
    from the best ``keep`` lends its buffer to the next read (no fresh allocation per tile).
    """
    ds = slide.level_downsamples[level]
    worst = [(-int(sums[i]), -i) for i in best]  # max-heap of (-sum, -index) over `best`: its worst on top
    heapq.heapify(worst)
    spare = None
    for i in np.sort(candidates).tolist():
        pixels = slide.read_region(int(round(xs[i] * ds)), int(round(ys[i] * ds)), level, tile, tile, fill=255,
                                   out=spare)
        spare = None
        sums[i] = _pixel_sum(pixels)
        best[i] = pixels
        heapq.heappush(worst, (-int(sums[i]), -i))
        if len(best) > keep:  # drop the worst (largest sum, then largest index: the stable sort's last)
            spare = best.pop(-heapq.heappop(worst)[1])


def _pixel_sum(pixels: np.ndarray) -> int:
    """Exact sum of a T×T×3 uint8 tile (uint32 column sums: faster than one int64 reduction)."""
    return int(pixels.reshape(pixels.shape[0], -1).sum(axis=0, dtype=np.uint32).sum(dtype=np.int64))


def _candidates(slide: SlideReader, level: int, tile_size: int, grid: Grid, inside: np.ndarray,
                keep: int) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray]:
    """((every grid tile's estimated mean, its shift spread) or None, the grid indices to read first):
    the ``keep`` best estimates from a coarser level and every tile whose estimate minus its spread
    lies within :data:`CANDIDATE_MARGIN` of the last of them (all tiles inside, and no estimate,
    when there is no coarser level or when the selection reaches near-white tiles)."""
    coarse = _coarse_level(slide, level, tile_size)
    if coarse is None:
        return None, np.flatnonzero(inside)
    estimate, spread = _estimate_means(slide, level, coarse, grid)
    order = np.argsort(estimate, kind="stable")
    nth = estimate[order[keep - 1]]
    if nth >= TISSUE_MEAN:  # the selection reaches near-white tiles: rank them all exactly
        return None, np.flatnonzero(inside)
    near = np.flatnonzero(estimate - spread <= nth + CANDIDATE_MARGIN)
    candidates = np.union1d(order[:keep], near)
    return (estimate, spread), candidates[inside[candidates]]


def _more_candidates(estimate: tuple[np.ndarray, np.ndarray], sums: np.ndarray, read: np.ndarray,
                     inside: np.ndarray, keep: int, tile: int) -> np.ndarray:
    """Unread tiles inside the image that could still rank among the best ``keep``: estimated mean
    minus its shift spread at most the exact ``keep``-th mean so far plus a margin. The margin is
    :data:`CANDIDATE_MARGIN`, or :data:`ERROR_SAFETY` × the largest error the spread did not explain
    on the read tiles (|exact − estimate| − spread), whichever is larger."""
    means, spread = estimate
    unread = ~read & inside
    known = ~unread  # read, or outside the image (white, exact without a read)
    if known.sum() < keep:
        return np.flatnonzero(unread)
    pixels = tile * tile * 3
    kth = np.partition(sums[known], keep - 1)[keep - 1] / pixels
    error = float((np.abs(sums[read] / pixels - means[read]) - spread[read]).max()) if read.any() else 0.0
    margin = max(CANDIDATE_MARGIN, ERROR_SAFETY * error)
    return np.flatnonzero(unread & (means - spread <= kth + margin))


def tile_slide(
    slide_file: Path,
    level: int = 1,
    n_tiles: int = 36,
    tile_size: int = 256,
    mode: int = 0,
    mask_file: Path | None = None,
    provider: str | None = None,
) -> SlideTiles:
    """Select a slide's ``n_tiles`` most-tissue tiles at ``level`` without decoding the whole level.

    Raises:
        DataError: an unreadable slide or mask, a missing level, mask labels outside the provider's scheme.
    """
    if mode not in (0, 2):
        raise OptionError(f"--mode {mode}: expected 0 or 2")
    with open_slide(slide_file) as slide:
        problem = level_problem(slide.level_count, level)
        if problem is not None:
            raise DataError(slide_file, problem)
        width, height = slide.level_dimensions[level]
        grid = Grid.of(height, width, tile_size, mode)
        n_grid = grid.rows * grid.cols
        xs_l, ys_l = grid.origin(np.arange(n_grid))
        inside = (xs_l + tile_size > 0) & (ys_l + tile_size > 0) & (xs_l < width) & (ys_l < height)
        white_sum = 255 * tile_size * tile_size * 3
        sums = np.full(n_grid, np.iinfo(np.int64).max, dtype=np.int64)
        sums[~inside] = white_sum
        keep = min(n_tiles, n_grid)
        estimate, candidates = _candidates(slide, level, tile_size, grid, inside, keep)
        best: dict[int, np.ndarray] = {}
        read = np.zeros(n_grid, dtype=bool)
        while len(candidates):
            _read_exact(slide, level, tile_size, xs_l, ys_l, candidates, keep, sums, best)
            read[candidates] = True
            candidates = np.zeros(0, np.int64) if estimate is None else \
                _more_candidates(estimate, sums, read, inside, keep, tile_size)
        index = _rank(sums, keep)
        tiles = np.full((n_tiles, tile_size, tile_size, 3), 255, np.uint8)  # white where no tile (fillers)
        for k, i in enumerate(index):
            if int(i) in best:  # else a tile outside the image: white
                tiles[k] = best[int(i)]
        ds = slide.level_downsamples[level]
    fill = np.zeros(n_tiles, dtype=bool)
    fill[keep:] = True
    xs = np.zeros(n_tiles, dtype=np.int64)
    ys = np.zeros(n_tiles, dtype=np.int64)
    xs[:keep] = np.round(xs_l[index] * ds).astype(np.int64)
    ys[:keep] = np.round(ys_l[index] * ds).astype(np.int64)
    n_tissue = int((tiles.reshape(n_tiles, -1).mean(axis=1) < TISSUE_MEAN).sum())
    masks = None
    if mask_file is not None:
        masks = _cut_masks(mask_file, level, xs, ys, fill, tile_size, provider)
    return SlideTiles(tiles=tiles, masks=masks, xs=xs, ys=ys, fill=fill, n_tissue=n_tissue)


def _cut_masks(mask_file: Path, level: int, xs: np.ndarray, ys: np.ndarray, fill: np.ndarray, tile: int,
               provider: str | None) -> np.ndarray:
    masks = np.zeros((len(xs), tile, tile), dtype=np.uint8)
    with open_slide(mask_file, labels=True) as mask:
        if level >= mask.level_count:
            raise DataError(mask_file, f"has {mask.level_count} level(s), --level {level} asked for")
        for k in np.flatnonzero(~fill):
            masks[k] = mask.read_region(int(xs[k]), int(ys[k]), level, tile, tile, fill=0)[..., 0]
    problem = mask_label_problem(int(masks.max()) if masks.size else 0, provider)
    if problem is not None:
        raise DataError(mask_file, problem)
    return masks


def mask_label_problem(max_label: int, provider: str | None) -> str | None:
    """Why a mask whose largest label is ``max_label`` does not fit ``provider``'s labels (None: it fits)."""
    from medchallenge.panda.data import MASK_CLASSES

    if provider is not None and max_label >= MASK_CLASSES[provider]:
        return f"mask label {max_label} does not fit provider {provider} (labels 0–{MASK_CLASSES[provider] - 1})"
    return None


def level_problem(level_count: int, level: int) -> str | None:
    """Why a slide (or mask) of ``level_count`` levels cannot be tiled at ``level`` (None: it can)."""
    if level >= level_count:
        return (f"has {level_count} level(s), --level {level} asked for"
                " (--level auto takes the nearest level every slide has)")
    return None


# ---------------------------------------------------------------------------- the cache
SETTINGS = ("split", "level", "tile_size", "n_tiles", "mode")


class TileCache:
    """A folder written by :func:`tile_slides`: ``meta``, ``index`` and per-slide tile stacks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        import pandas as pd

        from medchallenge.core.cache import CacheDir
        from medchallenge.panda.data import check_image_ids

        cache = CacheDir(self.path, CACHE_KIND)
        info = json.loads(cache.meta_file.read_text()).get("info", {}) if cache.meta_file.is_file() else {}
        self.meta: dict[str, Any] = {**cache.settings(), **info}  # settings() refuses a non-cache
        index_file = self.path / "index.csv"
        if not index_file.is_file():
            raise DataError(self.path, "tile cache without index.csv (tiling never finished a slide)")
        self.index = pd.read_csv(index_file, dtype={"image_id": str})
        # ids become file names (slides/{id}.npz): a hand-edited index must not reach outside the cache
        check_image_ids(self.index, index_file)

    def __len__(self) -> int:
        return len(self.index)

    def slide_file(self, image_id: str) -> Path:
        return self.path / "slides" / f"{image_id}.npz"

    def load(self, image_id: str) -> SlideTiles:
        """The cached tiles of one slide."""
        path = self.slide_file(image_id)
        try:
            with np.load(path) as data:
                slide = SlideTiles(
                    tiles=data["tiles"], masks=data["masks"] if "masks" in data.files else None,
                    xs=data["xs"], ys=data["ys"], fill=data["fill"], n_tissue=int(data["n_tissue"]),
                )
        except FileNotFoundError as err:
            raise DataError(path, "slide missing from the tile cache") from err
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(path, f"corrupt tile file ({err})") from err
        check_mask_shape(path, slide.tiles, slide.masks)
        return slide

    def mapped(self, image_id: str) -> dict[str, np.ndarray]:
        """The slide's arrays memory-mapped from its (uncompressed) ``.npz``: reading tile k reads only it.

        Returns ``{"tiles": N×T×T×3, "masks": N×T×T (when present), "fill": N}`` read-only views.
        """
        path = self.slide_file(image_id)
        try:
            arrays = npz_memmap(path, ("tiles", "masks", "fill"))
        except FileNotFoundError as err:
            raise DataError(path, "slide missing from the tile cache") from err
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(path, f"corrupt tile file ({err})") from err
        check_mask_shape(path, arrays["tiles"], arrays.get("masks"))
        return arrays

    def with_masks(self) -> list[str]:
        """Ids whose tiles come with mask tiles (``index.csv`` ``has_mask``), in index order."""
        if "has_mask" not in self.index.columns:
            return []
        flags = self.index["has_mask"].astype(str).str.lower().isin(["true", "1"])
        return self.index.loc[flags, "image_id"].tolist()


def check_mask_shape(path: Path, tiles: np.ndarray, masks: np.ndarray | None) -> None:
    """Mask tiles (N×T×T) must match image tiles (N×T×T×3) tile for tile, pixel for pixel."""
    if masks is not None and tuple(masks.shape) != tuple(tiles.shape[:3]):
        raise DataError(path, f"mask tiles of shape {tuple(masks.shape)} do not match image tiles"
                              f" {tuple(tiles.shape[:3])} (N×T×T)")


def npz_memmap(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Memory-map the arrays ``names`` (those present) of an uncompressed ``.npz`` (what :func:`numpy.savez` writes).

    Each member's data starts after its zip local header and its ``.npy`` header; both are parsed
    here (the zip directory read once) so the arrays can be mapped read-only instead of read whole.
    """
    with zipfile.ZipFile(path) as archive:
        present = set(archive.namelist())
        members = {name: archive.getinfo(f"{name}.npy") for name in names if f"{name}.npy" in present}
    arrays: dict[str, np.ndarray] = {}
    with open(path, "rb") as handle:
        for name, info in members.items():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{name}.npy is compressed: cannot be memory-mapped")
            handle.seek(info.header_offset)
            name_len, extra_len = struct.unpack("<HH", handle.read(30)[26:30])
            handle.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            if int(np.prod(shape)) == 0:
                arrays[name] = np.zeros(shape, dtype)
            else:
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape,
                                         order="F" if fortran else "C")
    return arrays


def _save_slide(path: Path, tiles: SlideTiles) -> None:
    from medchallenge.core.io import atomic_path

    arrays = {"tiles": tiles.tiles, "xs": tiles.xs, "ys": tiles.ys, "fill": tiles.fill,
              "n_tissue": np.int64(tiles.n_tissue)}
    if tiles.masks is not None:
        arrays["masks"] = tiles.masks
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # uncompressed: loads at disk speed, no decode


def _tile_one(job: dict[str, Any]) -> tuple[str, int, bool, bool]:
    """Worker: tile one slide into the cache; returns (id, n_tissue, has_mask, all_white)."""
    tiles = tile_slide(job["slide"], job["level"], job["n_tiles"], job["tile_size"], job["mode"],
                       mask_file=job["mask"], provider=job["provider"])
    _save_slide(job["out"], tiles)
    return job["image_id"], tiles.n_tissue, tiles.masks is not None, tiles.n_tissue == 0


def _rebuild_tables(out: Path, frame: pd.DataFrame) -> None:
    """Rewrite index.csv and tiles.csv from every finished per-slide file (safe across --part jobs)."""
    import pandas as pd

    from medchallenge.core.io import write_csv

    index_rows, tile_rows = [], []
    for row in frame.itertuples(index=False):
        path = out / "slides" / f"{row.image_id}.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            n_tissue = int(data["n_tissue"])
            has_mask = "masks" in data.files
            for rank, (x, y, fill) in enumerate(zip(data["xs"], data["ys"], data["fill"])):
                tile_rows.append((row.image_id, rank, int(x), int(y), bool(fill)))
        grade = getattr(row, "isup_grade", None)
        index_rows.append((row.image_id, row.data_provider, "" if grade is None or pd.isna(grade) else int(grade),
                           n_tissue, has_mask))
    write_csv(out / "index.csv", pd.DataFrame(index_rows, columns=["image_id", "data_provider", "isup_grade",
                                                                   "n_tissue", "has_mask"]))
    write_csv(out / "tiles.csv", pd.DataFrame(tile_rows, columns=["image_id", "rank", "x", "y", "fill"]))


def parse_level(text: str | int) -> int | str:
    """``--level``: a level number (0 = full resolution) or ``auto``."""
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise OptionError(f"--level {text}: expected a level number (0, 1, ...) or auto")


def auto_level(level_counts: dict[str, int]) -> tuple[int, str]:
    """``--level auto`` for slides of these level counts (file name → levels): (level, why)."""
    if not level_counts:
        return PREFERRED_LEVEL, "no slide to look at"
    fewest = min(level_counts, key=lambda name: level_counts[name])
    used = min(PREFERRED_LEVEL, level_counts[fewest] - 1)
    why = (f"every slide has level {PREFERRED_LEVEL}" if used == PREFERRED_LEVEL
           else f"{fewest} has {level_counts[fewest]} level(s), no level {PREFERRED_LEVEL}")
    return used, why


def resolve_level(slides: list[Path], level: int | str) -> int:
    """The level to tile: ``level`` itself, or for ``auto`` :data:`PREFERRED_LEVEL` when every slide
    has it, else the nearest level every slide has (the deepest of the slide with fewest levels).

    One level for the whole cache (all slides of the split, whatever ``--part``), so every tile has
    the same magnification and every part of an array job resolves the same level; logged.
    """
    from medchallenge.core import console

    if level != "auto":
        return int(level)
    counts: dict[Path, int] = {}
    for path in slides:
        with open_slide(path) as slide:
            counts[path] = slide.level_count
    used, why = auto_level({path.name: n for path, n in counts.items()})
    console.log(f"--level auto: tiling level {used} ({why})")
    return used


def tile_slides(
    data: Path,
    out: Path,
    split: str = "train",
    level: int | str = 1,
    n_tiles: int = 36,
    tile_size: int = 256,
    mode: int = 0,
    workers: int = 0,
    part: str | None = None,
    skip_missing: bool = False,
    overwrite: bool = False,
) -> Path:
    """Tile every slide of ``split`` into the cache ``out``; reruns skip finished slides.

    ``level``: a level number, or ``"auto"`` (see :func:`resolve_level`).

    Raises:
        DataError: a bad CSV, a missing slide (unless ``skip_missing``), an unreadable slide or mask,
            a slide without the level asked for.
        OptionError: ``out`` holds a cache tiled with other settings.
    """
    from medchallenge.core import console
    from medchallenge.core.cache import CacheDir
    from medchallenge.core.io import write_json
    from medchallenge.core.parallel import map_jobs
    from medchallenge.panda.data import read_test_csv, read_train_csv, slide_path

    data, out = Path(data), Path(out)
    frame = read_train_csv(data / "train.csv") if split == "train" else read_test_csv(data / "test.csv")
    level_option = parse_level(level)
    if level_option == "auto":
        present = [slide_path(data, split, i) for i in frame["image_id"]]
        level = resolve_level([p for p in present if p.is_file()], level_option)
    settings = {"split": split, "level": int(level), "tile_size": tile_size, "n_tiles": n_tiles, "mode": mode}
    cache = CacheDir(out, CACHE_KIND)
    cache.open_for_writing(settings, overwrite)  # other settings: an error naming each, unless --overwrite
    (out / "slides").mkdir(parents=True, exist_ok=True)
    jobs, missing = _jobs(data, out, frame, split, int(level), n_tiles, tile_size, mode, part, skip_missing,
                          overwrite)
    if missing:
        console.warn(f"{len(missing)} slide(s) missing on disk, skipped: {', '.join(missing[:5])}")
    downsample = None
    if jobs:
        with open_slide(jobs[0]["slide"]) as slide:
            downsample = slide.level_downsamples[int(level)] if int(level) < slide.level_count else None
    meta = json.loads(cache.meta_file.read_text())
    old_info = meta.get("info", {})
    meta["info"] = {"level_option": level_option, "data": str(data.resolve()),
                    "downsample": downsample if downsample is not None else old_info.get("downsample")}
    write_json(cache.meta_file, meta)
    console.log(f"tiling {len(jobs)} slide(s) of {split} (level {level}, {n_tiles}×{tile_size} px, mode {mode}) → {out}")
    results = map_jobs(_tile_one, jobs, workers, "tile")
    white = [r[0] for r in results if r[3]]
    if white:
        console.warn(f"{len(white)} slide(s) with no tissue tile (all white): {', '.join(white[:5])}")
    _rebuild_tables(out, frame)
    return out


def _jobs(data: Path, out: Path, frame: pd.DataFrame, split: str, level: int, n_tiles: int, tile_size: int,
          mode: int, part: str | None, skip_missing: bool, overwrite: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """(one job per slide of this part still to tile, ids of slides missing on disk)."""
    from medchallenge.core.parts import select_part
    from medchallenge.panda.data import mask_path, slide_path

    jobs, missing = [], []
    for row in select_part(list(frame.itertuples(index=False)), part):
        slide = slide_path(data, split, row.image_id)
        if not slide.is_file():
            if not skip_missing:
                raise DataError(slide, "slide listed in the CSV is missing (--skip-missing to skip it)")
            missing.append(row.image_id)
            continue
        target = out / "slides" / f"{row.image_id}.npz"
        if target.is_file() and not overwrite:
            continue
        mask = mask_path(data, row.image_id) if split == "train" else None
        jobs.append({"image_id": row.image_id, "slide": slide, "mask": mask if mask and mask.is_file() else None,
                     "provider": row.data_provider, "out": target, "level": int(level), "n_tiles": n_tiles,
                     "tile_size": tile_size, "mode": mode})
    return jobs, missing
