"""Seeded, per-class selection of sample indices: subsampling and the validation split.

Both work on a *group* key per sample (the class id, or task and class for feature streams with task ids)
so every group keeps its share. Groups are visited in sorted order and each draws from its own slice of one
seeded generator, so a given seed always picks the same samples whatever the class order of the stream.
"""

from __future__ import annotations

import math

import numpy as np

# Purposes of the generators derived from a spec's seed; independent streams so that, e.g., changing
# max_train_per_class does not reshuffle the task permutations.
SUBSAMPLE, VALIDATION, PERMUTATION = 0, 1, 2


def rng_for(seed: int, purpose: int) -> np.random.Generator:
    """A numpy Generator for one purpose (SUBSAMPLE, VALIDATION, PERMUTATION) of one seed."""
    return np.random.default_rng([seed, purpose])


def _groups(keys: np.ndarray) -> list[np.ndarray]:
    """Indices of ``keys`` grouped by value, groups in ascending key order, indices ascending inside."""
    order = np.argsort(keys, kind="stable")
    _, starts = np.unique(keys[order], return_index=True)
    return np.split(order, starts[1:]) if len(order) else []


def subsample_per_group(keys: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping at most ``limit`` random samples of each group."""
    kept = [g if len(g) <= limit else rng.permutation(g)[:limit] for g in _groups(keys)]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def validation_count(n: int, fraction: float) -> int:
    """How many of a group's ``n`` samples go to validation: round-half-up of ``n * fraction``.

    A group with at least two samples gives at least one to validation (when fraction > 0) and always keeps
    at least one for training, so tiny classes are still represented on both sides.
    """
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, math.floor(n * fraction + 0.5)))


def stratified_split(keys: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (train, val), each sorted, carving ``fraction`` of every group for val."""
    train, val = [], []
    for group in _groups(keys):
        shuffled = rng.permutation(group)
        k = validation_count(len(group), fraction)
        val.append(shuffled[:k])
        train.append(shuffled[k:])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(train)) if train else empty, np.sort(np.concatenate(val)) if val else empty)
