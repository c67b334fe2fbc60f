"""Validation folds of train and the units a candidate is scored on.

With ``data.cv_folds`` = k >= 2, train is cut into k stratified folds (``StratifiedKFold`` seeded by
``data.split_seed``): a pure function of the train labels, k, that seed and ``data.cv_small_classes``, so every
model, preset and study of a dataset validates on the same rows, and every train row is validated exactly once.
A class with fewer than k rows is refused (``refuse``, the default) or ``spread``: its rows are validated in
different folds (StratifiedKFold's own allocation) while the class's other rows train, and a class with a single
row is never validated: it trains in every fold, as the single split keeps a training row of every class. With 0
it is the single stratified ``val_fraction`` split. Test rows never enter either.

A *unit* is one (fold, seed) fit; unit index ``u = fold * seeds + seed``. A candidate's validation score is the
mean over its units, with the standard error of that mean.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from benchmark.core.config_sections import CV_SMALL_CLASSES
from benchmark.core.errors import UserError
from benchmark.core.row_split import stratified_split


class Unit(NamedTuple):
    """One (fold, seed) fit of a candidate; ``seed`` is the offset added to ``train.seed``."""

    fold: int
    seed: int


def units(cv_folds: int, seeds: int) -> list[Unit]:
    """Every unit in index order ``u = fold * seeds + seed`` (fold 0 only when ``cv_folds`` is 0)."""
    return [Unit(f, s) for f in range(max(cv_folds, 1)) for s in range(seeds)]


def _name(c: int, label_names: list[str] | None) -> str:
    return label_names[c] if label_names and c < len(label_names) else str(c)


def check_val_rows(labels: np.ndarray, val_fraction: float, label_names: list[str] | None = None) -> None:
    """Raise a ``UserError`` when the single ``val_fraction`` split would hold out no validation row at all.

    Each class keeps at least one training row and rounds its share, so a tiny fraction, or classes of one or two
    rows, leave validation empty, and training would fail on it later.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) == 0 or len(stratified_split(labels, val_fraction, 0)[1]):  # the count does not depend on the seed
        return
    small, large = int(counts.argmin()), int(counts.argmax())
    sizes = (
        f"the smallest class {_name(int(classes[small]), label_names)!r} has {counts[small]} training row(s), the "
        f"largest {_name(int(classes[large]), label_names)!r} {counts[large]}"
    )
    if counts[large] < 2:
        fix = "every class has a single row, which stays in training: give a validation split (data.val_split)"
    else:
        fix = (
            f"use data.val_fraction={0.5 / counts[large]:.3g} or more, data.cv_folds=2 with "
            "data.cv_small_classes=spread, or a validation split (data.val_split)"
        )
    raise UserError(f"data.val_fraction={val_fraction} holds out no validation row: {sizes}; {fix}")


def check_cv_folds(
    labels: np.ndarray,
    cv_folds: int,
    cv_small_classes: str,
    label_names: list[str] | None = None,
    val_fraction: float | None = None,
) -> None:
    """Raise a ``UserError`` when ``cv_folds`` folds cannot be cut from ``labels`` under the small-class rule.

    ``refuse``: every class needs at least ``cv_folds`` rows (it is then validated in every fold). ``spread``: some
    class needs that many (so that every fold has validation rows); smaller classes are spread over the folds.
    Without folds, ``val_fraction`` (None: the dataset has its own validation split) must hold out some row.
    """
    if cv_small_classes not in CV_SMALL_CLASSES:
        raise ValueError(f"cv_small_classes={cv_small_classes!r} is not one of {', '.join(CV_SMALL_CLASSES)}")
    if cv_folds < 2:
        if val_fraction is not None:
            check_val_rows(labels, val_fraction, label_names)
        return
    classes, counts = np.unique(labels, return_counts=True)
    spread = cv_small_classes == "spread"
    limit = int(counts.max() if spread else counts.min())
    if cv_folds > limit:
        c = int(classes[int(counts.argmax() if spread else counts.argmin())])
        name = _name(c, label_names)
        which, fix = ("largest", "") if spread else ("smallest", "; or set data.cv_small_classes=spread")
        allowed = f"{limit} (or 0 for one validation split)" if limit >= 2 else "0 (one validation split)"
        raise UserError(
            f"data.cv_folds={cv_folds} is larger than the {which} class's training count ({limit}, class {name!r}): "
            f"the largest allowed is {allowed}{fix}"
        )


def fold_rows(
    labels: np.ndarray, cv_folds: int, val_fraction: float, seed: int, cv_small_classes: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_rows, val_rows)`` per fold, both sorted: k stratified folds, or the single split when ``cv_folds`` < 2.

    Raises:
        UserError: ``cv_folds`` folds that ``cv_small_classes`` does not allow (see ``check_cv_folds``).
    """
    if cv_folds < 2:
        if val_fraction > 0:  # 0: a refit on every row, no validation wanted
            check_val_rows(labels, val_fraction)
        return [stratified_split(labels, val_fraction, seed)]
    from sklearn.model_selection import StratifiedKFold

    check_cv_folds(labels, cv_folds, cv_small_classes)
    splitter = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        if cv_small_classes == "spread":  # the documented rule, not a surprise: sklearn warns of it otherwise
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = list(splitter.split(np.zeros(len(labels)), labels))
    # A class's rows go to distinct folds (round robin), so a class of 2..k-1 rows keeps a training row in every
    # fold; a single row would leave its class untrained in its fold, so it trains everywhere instead (none under
    # ``refuse``, which has no class that small).
    classes, counts = np.unique(labels, return_counts=True)
    single = np.flatnonzero(np.isin(labels, classes[counts == 1]))
    return [(np.union1d(tr, single), np.setdiff1d(va, single)) for tr, va in folds]


def mean_se(values: list[float] | np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (std with ddof=1 over sqrt(n); 0 with one value) along ``axis``."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    se = v.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(np.delete(v.shape, axis % v.ndim))
    return v.mean(axis=axis), se
