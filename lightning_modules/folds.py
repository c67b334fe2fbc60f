"""Validation folds of train and the units a candidate is scored on.

With ``data.cv_folds`` = k >= 2, train is cut into k stratified folds (``StratifiedKFold`` seeded by
``data.split_seed``): a pure function of the train labels and that seed, so every model, preset and study of a
dataset validates on the same rows, and every train row is validated exactly once. With 0 it is the single
stratified ``val_fraction`` split. Test rows never enter either.

A *unit* is one (fold, seed) fit; unit index ``u = fold * seeds + seed``. A candidate's validation score is the
mean over its units, with the standard error of that mean.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from benchmark.core.errors import UserError
from lightning_modules.features import stratified_split


class Unit(NamedTuple):
    """One (fold, seed) fit of a candidate; ``seed`` is the offset added to ``train.seed``."""

    fold: int
    seed: int


def units(cv_folds: int, seeds: int) -> list[Unit]:
    """Every unit in index order ``u = fold * seeds + seed`` (fold 0 only when ``cv_folds`` is 0)."""
    return [Unit(f, s) for f in range(max(cv_folds, 1)) for s in range(seeds)]


def check_cv_folds(labels: np.ndarray, cv_folds: int, label_names: list[str] | None = None) -> None:
    """Raise a ``UserError`` when a class has fewer training rows than ``cv_folds`` (it cannot be in every fold)."""
    if cv_folds < 2:
        return
    classes, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min())
    if cv_folds > smallest:
        c = int(classes[int(counts.argmin())])
        name = label_names[c] if label_names and c < len(label_names) else str(c)
        raise UserError(
            f"data.cv_folds={cv_folds} is larger than the smallest class's training count ({smallest}, class "
            f"{name!r}): the largest allowed is {smallest} (or 0 for one validation split)"
        )


def fold_rows(labels: np.ndarray, cv_folds: int, val_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_rows, val_rows)`` per fold, both sorted: k stratified folds, or the single split when ``cv_folds`` < 2.

    Raises:
        UserError: ``cv_folds`` larger than the smallest class's count (see ``check_cv_folds``).
    """
    if cv_folds < 2:
        return [stratified_split(labels, val_fraction, seed)]
    from sklearn.model_selection import StratifiedKFold

    check_cv_folds(labels, cv_folds)
    splitter = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]


def mean_se(values: list[float] | np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (std with ddof=1 over sqrt(n); 0 with one value) along ``axis``."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    se = v.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(np.delete(v.shape, axis % v.ndim))
    return v.mean(axis=axis), se
