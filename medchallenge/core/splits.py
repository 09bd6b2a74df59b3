"""Seeded train/validation splits: stratified, k-fold, grouped by patient."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from medchallenge.core.errors import OptionError


def stratified_split(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``val_fraction`` of the items, stratified by ``labels``.

    Falls back to a seeded random split when some class is too rare to stratify.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0.0 < val_fraction < 1.0:
        raise OptionError(f"--val-fraction {val_fraction}: expected a number between 0 and 1")
    n_val = max(1, int(round(n * val_fraction)))
    if n < 2 or n_val >= n:
        raise OptionError(f"cannot split {n} item(s) into training and validation (val fraction {val_fraction})")
    _, counts = np.unique(labels, return_counts=True)
    n_classes = len(counts)
    if counts.min() >= 2 and n_val >= n_classes and n - n_val >= n_classes:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
        train, val = next(splitter.split(np.zeros(n), labels))
    else:
        order = np.random.default_rng(seed).permutation(n)
        val, train = order[:n_val], order[n_val:]
    return np.sort(train), np.sort(val)


def kfold_split(
    labels: Sequence[int] | np.ndarray, n_folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of fold ``fold`` of a seeded stratified ``n_folds``-fold split."""
    labels = np.asarray(labels)
    if n_folds < 2 or not 0 <= fold < n_folds:
        raise OptionError(f"--fold {fold} of --n-folds {n_folds}: expected 0 <= fold < n_folds and n_folds >= 2")
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() < n_folds:
        order = np.random.default_rng(seed).permutation(len(labels))
        val = np.sort(np.array_split(order, n_folds)[fold])
        train = np.setdiff1d(np.arange(len(labels)), val)
        return train, val
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    train, val = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(train), np.sort(val)


def grouped_split(
    groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) such that no group (patient, case) is on both sides."""
    groups_arr = np.asarray(groups)
    unique = np.unique(groups_arr)
    if len(unique) < 2:
        raise OptionError(f"cannot split {len(unique)} group(s) into training and validation")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(unique)
    n_val = min(len(unique) - 1, max(1, int(round(len(unique) * val_fraction))))
    val_groups = set(shuffled[:n_val].tolist())
    mask = np.array([g in val_groups for g in groups_arr])
    return np.flatnonzero(~mask), np.flatnonzero(mask)
