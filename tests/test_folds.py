"""Cross-validation folds and units: stratified, seeded, every train row validated once, bad input, and why folds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from helpers_features import make_model

from benchmark.cli import main
from benchmark.core.config import ConfigError, load_config
from benchmark.core.errors import UserError
from lightning_modules.datamodule import CachedFeatureDataModule
from lightning_modules.folds import check_cv_folds, fold_rows, mean_se, units
from studies.selection import select


def test_folds_are_stratified_seeded_and_validate_every_train_row_once() -> None:
    labels = np.repeat([0, 1, 2], [40, 25, 12])
    folds = fold_rows(labels, 5, 0.1, seed=7)
    assert len(folds) == 5
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.arange(len(labels)))  # every row validated exactly once
    for tr, va in folds:
        assert not np.intersect1d(tr, va).size and len(tr) + len(va) == len(labels)
        assert np.all(np.abs(np.bincount(labels[va], minlength=3) - np.array([40, 25, 12]) / 5) < 1)  # stratified
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, fold_rows(labels, 5, 0.1, 7), strict=True))
    assert not np.array_equal(folds[0][1], fold_rows(labels, 5, 0.1, 8)[0][1])  # the seed matters
    assert len(fold_rows(labels, 0, 0.1, 7)) == 1  # 0: the single val_fraction split


def test_units_and_standard_error() -> None:
    assert units(3, 2) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]  # u = fold * seeds + seed
    assert units(0, 3) == [(0, 0), (0, 1), (0, 2)]
    mean, se = mean_se([0.8, 0.9, 0.7])
    assert mean == pytest.approx(0.8) and se == pytest.approx(0.1 / np.sqrt(3))
    assert mean_se([0.8])[1] == 0.0


def _fold_hashes(model_dir: Path, test_dir: Path, cv_folds: int) -> list[str]:
    from lightning_modules.datamodule import Selection

    out = []
    for fold in range(cv_folds):
        dm = CachedFeatureDataModule([Selection("m", 1, model_dir, test_dir)], cv_folds=cv_folds, fold=fold)
        dm.setup()
        val, train, test = (dm.datasets[s] for s in ("val", "train", "test"))
        # Validation rows are train-cache rows, never test rows: they are read from the train cache's files.
        assert val.sources[0].files[0].path.parent == model_dir and test.sources[0].files[0].path.parent == test_dir
        assert not np.intersect1d(val.rows, train.rows).size
        out.append(hashlib.sha256(val.rows.tobytes()).hexdigest())
    return out


def test_folds_are_the_same_for_every_model_and_never_touch_test(tmp_path: Path) -> None:
    a = make_model(tmp_path, "a", n_train=60, n_test=20, hidden=4, num_layers=2, seed=3)
    b = make_model(tmp_path, "b", n_train=60, n_test=20, hidden=6, num_layers=4, seed=3)
    ha, hb = _fold_hashes(a.train_dir, a.test_dir, 3), _fold_hashes(b.train_dir, b.test_dir, 3)
    assert ha == hb and len(set(ha)) == 3


def test_cv_folds_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_config(env={}, **{"data.cv_folds": 1}).data.cv_folds == 0  # one fold means the single split
    for bad, says in (("-1", "data.cv_folds=-1 is negative"), ("2.5", "data.cv_folds=2.5 is not a whole number")):
        with pytest.raises(ConfigError, match=says):
            load_config(env={}, overrides=[f"data.cv_folds={bad}"])
        assert main(["study", "--preset", "layer-sweep", "--set", f"data.cv_folds={bad}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "smallest class's training count" in err
    with pytest.raises(UserError, match=r"data.cv_folds=4 is larger .* \(3, class 'b'\): the largest allowed is 3"):
        check_cv_folds(np.array([0] * 10 + [1] * 3), 4, ["a", "b"])
    from benchmark.core.cache import FeatureCache

    m = make_model(tmp_path, n_train=20, n_test=10, hidden=4, num_layers=1)
    smallest = int(np.bincount(FeatureCache(m.train_dir).labels()).min())
    with pytest.raises(UserError, match=f"the largest allowed is {smallest} "):
        CachedFeatureDataModule([m.select(0)], cv_folds=smallest + 1).setup()
    CachedFeatureDataModule([m.select(0)], cv_folds=smallest).setup()


def _planted(
    seed: int, n: int = 200, hidden: int = 8, layers: int = 6, planted: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(layers, n, hidden)``: class signal 1.0 in layer ``planted``, 0.7 (a near-tie) in every other."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    centers = rng.normal(size=(2, hidden))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = rng.normal(size=(layers, n, hidden))
    for layer in range(layers):
        x[layer] += (1.0 if layer == planted else 0.7) * centers[labels]
    return x, labels


def _unit_scores(x: np.ndarray, y: np.ndarray, cv_folds: int) -> np.ndarray:
    """Validation accuracy ``(layers, units)`` of a nearest-class-mean classifier fitted on each fold's train part."""
    out = np.empty((len(x), max(cv_folds, 1)))
    for u, (tr, va) in enumerate(fold_rows(y, cv_folds, 0.1, 0)):
        for layer, feats in enumerate(x):
            means = np.stack([feats[tr][y[tr] == c].mean(axis=0) for c in (0, 1)])
            pred = ((feats[va][:, None] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
            out[layer, u] = (pred == y[va]).mean()
    return out


def test_five_folds_find_the_planted_layer_more_often_than_one_split() -> None:
    """50 seeded draws: 5-fold selection (argmax of the fold mean) vs the single 10% split, and the one-SE tie set."""
    single = folds = tied = 0
    for seed in range(50):
        x, y = _planted(seed)
        one, five = _unit_scores(x, y, 0), _unit_scores(x, y, 5)
        single += int(one.mean(axis=1).argmax() == 4)
        folds += int(five.mean(axis=1).argmax() == 4)
        tied += int(4 in select(list(five)).tied)  # the one-SE tie set of studies.selection
    assert folds > single  # measured: 40 vs 16 of 50
    assert tied >= 45  # measured: 46 of 50
