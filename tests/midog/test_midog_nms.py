"""The KD-tree NMS keeps exactly what the reference greedy loop keeps (ties, boundaries, clusters)."""

from __future__ import annotations

import numpy as np
import pytest

from medchallenge.midog.nms import nms_by_distance, nms_by_distance_loop


def _reference(points: np.ndarray, scores: np.ndarray, radius: float) -> list[int]:
    """The rule written out here: by decreasing score (stable), keep unless a kept point is within radius."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable
    keep: list[int] = []
    for i in order:
        if all(np.hypot(points[i][0] - points[k][0], points[i][1] - points[k][1]) > radius for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_fast_nms_equals_the_loop_on_random_points_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 240
    points = rng.integers(0, 300, size=(n, 2)).astype(np.float64)  # integer grid: many exact distances
    points[: n // 4] = points[n // 4: n // 2]  # duplicated points
    scores = rng.choice([0.2, 0.5, 0.7, 0.9], size=n)  # many tied scores
    for radius in (0.0, 5.0, 25.0):
        fast = nms_by_distance(points, scores, radius).tolist()
        assert fast == _reference(points, scores, radius)
        assert fast == nms_by_distance_loop(points, scores, radius).tolist()


def test_points_exactly_at_the_radius_are_suppressed_like_the_loop() -> None:
    points = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 5.000001]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # (3,4) is at distance 5 from (0,0): suppressed; (6,8) is 5 from (3,4), which was dropped: kept
    assert nms_by_distance(points, scores, 5.0).tolist() == [0, 2, 3] == _reference(points, scores, 5.0)


def test_empty_and_single() -> None:
    assert nms_by_distance(np.zeros((0, 2)), np.zeros(0)).tolist() == []
    assert nms_by_distance(np.array([[1.0, 2.0]]), np.array([0.3])).tolist() == [0]
