"""Augmentation of tile stacks: flips and transposes per tile and of the whole mosaic."""

from __future__ import annotations

import math

import numpy as np


def augment_stack(tiles: np.ndarray, rng: np.random.Generator, grid: bool) -> np.ndarray:
    """Random flips/transposes of a tile stack N×T×T×C (uint8), per tile and, with ``grid``, of the mosaic.

    A mosaic-level flip or transpose moves tiles on the ⌈√N⌉ grid and flips/transposes each tile
    the same way, exactly as flipping the assembled mosaic would (N must be a square).
    """
    n = tiles.shape[0]
    g = math.isqrt(n)
    out = tiles
    if grid and g * g == n:
        mosaic = out.reshape(g, g, *out.shape[1:])  # rows, cols, T, T, C
        if rng.random() < 0.5:  # horizontal flip: reverse columns and each tile's x
            mosaic = mosaic[:, ::-1, :, ::-1]
        if rng.random() < 0.5:  # vertical flip
            mosaic = mosaic[::-1, :, ::-1]
        if rng.random() < 0.5:  # transpose
            mosaic = mosaic.transpose(1, 0, 3, 2, 4)
        out = mosaic.reshape(n, *out.shape[1:])
    flips = rng.random((n, 3)) < 0.5
    result = np.empty_like(out)
    for i in range(n):
        tile = out[i]
        if flips[i, 0]:
            tile = tile[:, ::-1]
        if flips[i, 1]:
            tile = tile[::-1]
        if flips[i, 2]:
            tile = tile.transpose(1, 0, 2)
        result[i] = tile
    return result
