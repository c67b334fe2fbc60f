"""Which training rows validate: the one stratified hold-out every head, fold plan and run input agrees on."""

from __future__ import annotations

import math

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row ids into (train, validation), both sorted, with the class mix of ``labels``.

    Per class c with n_c rows, ``floor(fraction * n_c + 0.5)`` random rows go to validation, but at most
    ``n_c - 1`` so every class keeps a training row (R52 has classes with a single training text).
    """
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = min(int(math.floor(fraction * len(idx) + 0.5)), len(idx) - 1)
        val.append(rng.permutation(idx)[:take])
    val_rows = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_rows = np.setdiff1d(np.arange(len(labels)), val_rows)
    return train_rows, val_rows
