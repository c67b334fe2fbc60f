"""The stratified hold-out: class mix kept, disjoint, seeded, every class left a training row."""

from __future__ import annotations

import numpy as np

from benchmark.core.row_split import stratified_split


def test_stratified_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat([0, 1, 2, 3], [500, 300, 150, 1])
    train, val = stratified_split(labels, 0.1, seed=0)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(labels)))
    assert np.bincount(labels[val], minlength=4).tolist() == [50, 30, 15, 0]  # the singleton class stays in train
    again, _ = stratified_split(labels, 0.1, seed=0)
    other, _ = stratified_split(labels, 0.1, seed=1)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
