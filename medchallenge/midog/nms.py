"""Greedy non-maximum suppression of detection points by centre distance, in O(N log N).

The rule is the reference loop's (``nms_by_distance_loop``): visit points by decreasing score
(stable for ties), keep a point unless a kept point lies within ``radius`` px (distance ≤ radius),
else drop it. A whole 7215×5412 image yields about 19k raw detections; the loop compares each with
every kept point (O(N·K), seconds to minutes), while here a KD-tree finds all pairs within the
radius once and the greedy pass only walks each point's neighbours.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def nms_by_distance(points: np.ndarray, scores: np.ndarray, radius: float = 25.0) -> np.ndarray:
    """Indices kept (in visiting order, highest score first) of ``points`` (N×2 px) with ``scores`` (N)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(-np.asarray(scores), kind="stable")
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=int)
    # all pairs within the radius; a hair wider, then the exact test of the loop, so rounding at the
    # boundary decides as np.hypot does there
    pairs = cKDTree(points).query_pairs(radius * (1 + 1e-9) + 1e-12, output_type="ndarray")
    if len(pairs):
        delta = points[pairs[:, 0]] - points[pairs[:, 1]]
        pairs = pairs[~(np.hypot(delta[:, 0], delta[:, 1]) > radius)]
    # neighbour lists as CSR (each pair in both directions)
    heads = np.concatenate([pairs[:, 0], pairs[:, 1]]) if len(pairs) else np.zeros(0, dtype=int)
    tails = np.concatenate([pairs[:, 1], pairs[:, 0]]) if len(pairs) else np.zeros(0, dtype=int)
    by_head = np.argsort(heads, kind="stable")
    neighbours = tails[by_head]
    starts = np.searchsorted(heads[by_head], np.arange(n + 1))
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed[neighbours[starts[i]:starts[i + 1]]] = True
    return np.asarray(keep, dtype=int)


def nms_by_distance_loop(points: np.ndarray, scores: np.ndarray, radius: float = 25.0) -> np.ndarray:
    """The reference: the plain greedy loop (O(N·K)); kept for the equality test and the bench."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    for i in order:
        if all(np.hypot(*(points[i] - points[k])) > radius for k in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=int)
