"""Benchmark `panda tile` against the whole-level reference on slides with a ~6000² level 1.

Writes a few synthetic pyramidal slides (level 0 ~24000², tile by tile, never whole in memory),
then tiles them in fresh subprocesses with (a) medchallenge's tile_slide (candidates from the
coarse level, only candidate tiles read) and (b) the reference: level 1 read whole with tifffile,
padded, reshaped and sorted. Reports ms per slide, peak working memory (VmHWM minus the RSS
before the first slide), the overlap of the selected tiles, and tile-cache load speed.
Prints one JSON object.

    .venv/bin/python bench/panda_tile.py --slides 4 --level1 6000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def write_big_slide(path: Path, level1: int, seed: int) -> None:
    """A 3-level JPEG pyramid (downsamples 1, 4, 16) with level 1 of level1² px, written tile by tile."""
    import tifffile

    rng = np.random.default_rng(seed)
    base = level1 // 4  # level-2 resolution drawing
    yy, xx = np.ogrid[:base, :base]
    tissue = np.zeros((base, base), bool)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.2, 0.8) * base, rng.uniform(0.2, 0.8) * base, rng.uniform(0.08, 0.18) * base
        tissue |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    colour = np.full((base, base, 3), 255, np.uint8)
    shade = rng.integers(90, 220, (base, base, 1)).astype(np.uint8)
    colour[tissue] = np.concatenate([shade, shade // 2 + 40, shade], axis=2)[tissue]
    tile = 512
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, ds in enumerate((1, 4, 16)):
            size = level1 * 4 // ds
            factor = 16 // ds  # level-2 pixels → this level's pixels

            def tiles(size: int = size, factor: int = factor):
                for y in range(0, size, tile):
                    for x in range(0, size, tile):
                        ys = (np.arange(y, y + tile) // factor).clip(0, base - 1)
                        xs = (np.arange(x, x + tile) // factor).clip(0, base - 1)
                        yield colour[ys][:, xs]

            tif.write(tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                      compression="jpeg", subfiletype=0 if i == 0 else 1)


WORKER = r"""
import json, sys, time
import numpy as np
from pathlib import Path
method, tile, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
slides = [Path(p) for p in sys.argv[4:]]
from medchallenge.panda.tiles import tile_slide, select_tiles_whole_level
import tifffile, openslide
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field): return int(line.split()[1])
baseline = rss('VmRSS:')
out, times = [], []
for s in slides:
    t = time.perf_counter()
    if method == 'medchallenge':
        r = tile_slide(s, level=1, n_tiles=n, tile_size=tile)
        pos = [(int(x), int(y)) for x, y, f in zip(r.xs, r.ys, r.fill) if not f]
    else:
        with tifffile.TiffFile(s) as tif:
            image = tif.pages[1].asarray()
        tiles, idx = select_tiles_whole_level(image, tile, n)
        from medchallenge.panda.tiles import Grid
        g = Grid.of(image.shape[0], image.shape[1], tile, 0)
        x, y = g.origin(idx[idx >= 0])
        pos = [(int(a) * 4, int(b) * 4) for a, b in zip(x, y)]
        del image, tiles
    times.append(time.perf_counter() - t)
    out.append(pos)
print(json.dumps({"ms_per_slide": 1000 * float(np.mean(times)), "peak_mb": (rss('VmHWM:') - baseline) / 1024,
                  "positions": out}))
"""


def run(method: str, slides: list[Path], tile: int, n: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", WORKER, method, str(tile), str(n), *map(str, slides)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--level1", type=int, default=6000, help="level-1 width/height in px")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--n-tiles", type=int, default=36)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        slides = []
        t = time.perf_counter()
        for i in range(args.slides):
            path = Path(tmp) / f"slide{i}.tiff"
            write_big_slide(path, args.level1, seed=i)
            slides.append(path)
        write_s = time.perf_counter() - t
        ours = run("medchallenge", slides, args.tile, args.n_tiles)
        ref = run("reference", slides, args.tile, args.n_tiles)
        overlap = np.mean([len(set(map(tuple, a)) & set(map(tuple, b))) / max(1, len(b))
                           for a, b in zip(ours["positions"], ref["positions"])])

        # loading speed of a cache of the same slides
        from medchallenge.core.cache import CacheDir  # noqa: PLC0415
        from medchallenge.panda.tiles import CACHE_KIND, TileCache, _save_slide, tile_slide  # noqa: PLC0415

        cache_dir = Path(tmp) / "cache"
        (cache_dir / "slides").mkdir(parents=True)
        ids = []
        for i, s in enumerate(slides):
            _save_slide(cache_dir / "slides" / f"{i:032x}.npz", tile_slide(s, 1, args.n_tiles, args.tile))
            ids.append(f"{i:032x}")  # the cache accepts PANDA ids only (32 lowercase hex)
        CacheDir(cache_dir, CACHE_KIND).open_for_writing({"level": 1, "n_tiles": args.n_tiles, "tile_size": args.tile})
        (cache_dir / "index.csv").write_text("image_id\n" + "\n".join(ids) + "\n")
        cache = TileCache(cache_dir)
        t = time.perf_counter()
        loads = 0
        while time.perf_counter() - t < 2.0:
            for image_id in ids:
                cache.load(image_id)
                loads += 1
        per_s = loads / (time.perf_counter() - t)
    print(json.dumps({
        "slides": args.slides, "level1_px": args.level1, "tile": args.tile, "n_tiles": args.n_tiles,
        "write_s": round(write_s, 1),
        "medchallenge_ms_per_slide": round(ours["ms_per_slide"], 1),
        "reference_ms_per_slide": round(ref["ms_per_slide"], 1),
        "speedup": round(ref["ms_per_slide"] / ours["ms_per_slide"], 2),
        "medchallenge_peak_mb": round(ours["peak_mb"], 1),
        "reference_peak_mb": round(ref["peak_mb"], 1),
        "memory_ratio": round(ref["peak_mb"] / max(ours["peak_mb"], 1e-3), 2),
        "tile_overlap": round(float(overlap), 4),
        "cache_stacks_per_s_one_worker": round(per_s, 1),
        "cache_stack_mb": round(args.n_tiles * args.tile * args.tile * 3 / 2**20, 1),
    }))


if __name__ == "__main__":
    main()
