"""Seeded train/validation splits: stratified, k-fold, grouped by patient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def case_split(groups: Sequence[str], strata: Sequence[Any] | None, val_fraction: float, n_folds: int | None,
               fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of items such that no group (case, patient, slide) straddles the two.

    Args:
        groups: the group id of each item (items of a group always land on the same side).
        strata: a label per item to stratify by (a group takes its most frequent label); None: none.
        val_fraction: the validation share of groups when ``n_folds`` is None.
        n_folds: fold ``fold`` of a seeded stratified group k-fold; None: one seeded split.
        seed: the split's seed (the same seed and folds give the same split on every machine).

    Raises:
        OptionError: fewer groups than folds (or than 2).
    """
    groups_arr = np.asarray([str(g) for g in groups])
    unique, inverse = np.unique(groups_arr, return_inverse=True)
    if strata is None:
        labels = np.zeros(len(unique), dtype=np.int64)
    else:
        labels = _group_labels(inverse, np.asarray([str(s) for s in strata]), len(unique))
    if n_folds is None:
        if len(unique) < 2:
            raise OptionError(f"cannot split {len(unique)} case(s) into training and validation")
        _, val_groups = stratified_split(labels, val_fraction, seed)
    else:
        if len(unique) < n_folds:
            raise OptionError(f"--n-folds {n_folds}: only {len(unique)} case(s) to split")
        _, val_groups = kfold_split(labels, n_folds, fold, seed)
    is_val = np.isin(inverse, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _group_labels(inverse: np.ndarray, strata: np.ndarray, n_groups: int) -> np.ndarray:
    """The most frequent stratum of each group, as integer codes (ties: the smallest code)."""
    _, codes = np.unique(strata, return_inverse=True)
    counts = np.zeros((n_groups, codes.max() + 1), dtype=np.int64)
    np.add.at(counts, (inverse, codes), 1)
    return counts.argmax(axis=1)
