"""The single train/validation split refuses an empty validation set, naming the smallest class."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.errors import UserError


def test_the_single_split_refuses_an_empty_validation_set_naming_the_smallest_class() -> None:
    """300 classes of 1-2 rows: every class keeps its rows for training; refused before any training."""
    from lightning_modules.folds import check_cv_folds, fold_rows

    labels = np.repeat(np.arange(300), [1, 2] * 150)
    names = [f"c{i}" for i in range(300)]
    with pytest.raises(UserError, match=r"smallest class 'c0' has 1 training row.*data.val_fraction=0.25 or more"):
        check_cv_folds(labels, 0, "refuse", names, val_fraction=0.1)
    with pytest.raises(UserError, match="holds out no validation row"):
        fold_rows(labels, 0, 0.1, 0, "refuse")  # the split itself refuses too, for callers without the pre-flight
    assert len(fold_rows(labels, 0, 0.25, 0, "refuse")[0][1]) == 150
    assert len(fold_rows(labels, 0, 0.0, 0, "refuse")[0][1]) == 0  # a refit on all rows asks for no validation
    check_cv_folds(labels, 0, "refuse", names, val_fraction=None)  # the dataset's own validation split
