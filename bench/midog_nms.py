"""MIDOG distance NMS: the KD-tree version against the reference greedy loop, on whole-image point counts.

A 7215×5412 image tiled in 512 px patches with 10% overlap is about 192 patches × up to 100 boxes,
so about 19k raw detections, clustered around figures (several patches and boxes see each one).
Prints JSON: per N, seconds of each and whether the kept indices are identical.

    python bench/midog_nms.py [--sizes 2000 20000] [--loop-max 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from medchallenge.midog.nms import nms_by_distance, nms_by_distance_loop


def detections(n: int, seed: int = 0, width: int = 7215, height: int = 5412) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points: a third spread over the image, two thirds in clusters of ~8 within 15 px of a centre."""
    rng = np.random.default_rng(seed)
    spread = rng.uniform([0, 0], [width, height], size=(n // 3, 2))
    centres = rng.uniform([0, 0], [width, height], size=((n - n // 3) // 8 + 1, 2))
    clustered = centres[rng.integers(0, len(centres), n - n // 3)] + rng.normal(0, 6, size=(n - n // 3, 2))
    points = np.concatenate([spread, clustered])
    scores = np.round(rng.random(n), 3)  # rounded: ties, as detector scores have
    return points, scores


def timed(fn, *args) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 5000, 20000])
    parser.add_argument("--loop-max", type=int, default=5000, help="largest N the slow loop is timed on")
    parser.add_argument("--radius", type=float, default=25.0)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        points, scores = detections(n)
        fast_s, fast = timed(nms_by_distance, points, scores, args.radius)
        row = {"n": n, "kdtree_s": round(fast_s, 4), "kept": len(fast)}
        if n <= args.loop_max:
            loop_s, loop = timed(nms_by_distance_loop, points, scores, args.radius)
            row.update(loop_s=round(loop_s, 3), speedup=round(loop_s / fast_s, 1),
                       identical=bool(np.array_equal(fast, loop)))
        rows.append(row)
    print(json.dumps({"bench": "midog_nms", "radius": args.radius, "machine": platform.processor() or platform.machine(),
                      "python": platform.python_version(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
