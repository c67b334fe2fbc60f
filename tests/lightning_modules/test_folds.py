"""Cross-validation folds and units: stratified, seeded, every train row validated once, bad input, and why folds."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers_features import make_model
from study_helpers import models_only

from benchmark.cli import main
from benchmark.core.config import BenchConfig, load_config
from benchmark.core.config_sections import ConfigError
from benchmark.core.errors import UserError
from lightning_modules.datamodule import CachedFeatureDataModule
from lightning_modules.folds import check_cv_folds, fold_rows, mean_se, units
from studies.choice.selection import select


def test_folds_are_stratified_seeded_and_validate_every_train_row_once() -> None:
    labels = np.repeat([0, 1, 2], [40, 25, 12])
    folds = fold_rows(labels, 5, 0.1, 7, "refuse")
    assert len(folds) == 5
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.arange(len(labels)))  # every row validated exactly once
    for tr, va in folds:
        assert not np.intersect1d(tr, va).size and len(tr) + len(va) == len(labels)
        assert np.all(np.abs(np.bincount(labels[va], minlength=3) - np.array([40, 25, 12]) / 5) < 1)  # stratified
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, fold_rows(labels, 5, 0.1, 7, "refuse"), strict=True))
    assert not np.array_equal(folds[0][1], fold_rows(labels, 5, 0.1, 8, "refuse")[0][1])  # the seed matters
    assert len(fold_rows(labels, 0, 0.1, 7, "refuse")) == 1  # 0: the single val_fraction split


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
    # An unknown small-class rule: one line listing the rules.
    with pytest.raises(ConfigError, match="data.cv_small_classes='drop' is not valid"):
        load_config(env={}, overrides=["data.cv_small_classes=drop"])
    assert main(["study", "--preset", "layer-sweep", "--set", "data.cv_small_classes=drop"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.cv_small_classes='drop'" in err and "refuse, spread" in err
    # refuse (the default): the smallest class bounds k, and the message names the spread alternative.
    with pytest.raises(UserError) as refused:
        check_cv_folds(np.array([0] * 10 + [1] * 3), 4, "refuse", ["a", "b"])
    assert str(refused.value) == (
        "data.cv_folds=4 is larger than the smallest class's training count (3, class 'b'): the largest allowed is 3 "
        "(or 0 for one validation split); or set data.cv_small_classes=spread"
    )
    with pytest.raises(UserError, match=r"\(1, class 'a'\): the largest allowed is 0 \(one validation split\); or set"):
        check_cv_folds(np.array([0] + [1] * 9), 2, "refuse", ["a", "b"])  # one row: no k >= 2 works
    # spread: the largest class bounds k (every fold then has validation rows).
    check_cv_folds(np.array([0] * 10 + [1] * 3), 10, "spread", ["a", "b"])
    with pytest.raises(UserError, match=r"larger than the largest class's training count \(10, class 'a'\)"):
        check_cv_folds(np.array([0] * 10 + [1] * 3), 11, "spread", ["a", "b"])
    from benchmark.core.cache import FeatureCache

    m = make_model(tmp_path, n_train=20, n_test=10, hidden=4, num_layers=1)
    labels = FeatureCache(m.train_dir).labels()
    smallest = int(np.bincount(labels).min())
    with pytest.raises(UserError, match=f"the largest allowed is {smallest} .*data.cv_small_classes=spread"):
        CachedFeatureDataModule([m.select(0)], cv_folds=smallest + 1).setup()
    CachedFeatureDataModule([m.select(0)], cv_folds=smallest).setup()
    spread = CachedFeatureDataModule([m.select(0)], cv_folds=smallest + 1, fold=1, cv_small_classes="spread")
    spread.setup()  # the DataModule validates on the rows of fold_rows under the same rule
    assert np.array_equal(spread.datasets["val"].rows, fold_rows(labels, smallest + 1, 0.1, 0, "spread")[1][1])


def test_cli_refuses_folds_beyond_the_smallest_class_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import write_dataset

    data = write_dataset(tmp_path / "toy", n_train=24, n_test=12)  # 12 rows per class
    monkeypatch.chdir(tmp_path)
    argv = ["study", "--preset", "tfidf-baseline", "--dataset", str(data), "--no-progress", "--set", "data.cv_folds=13"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "layerfuse: error: data.cv_folds=13 is larger than the smallest class's training count (12, class 'neg'): "
        "the largest allowed is 12 (or 0 for one validation split); or set data.cv_small_classes=spread"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no store, run or cache was written first


SIZES = (1, 2, 3, 40)  # R52-like: a single-row class, classes smaller than k = 5, and a large one


def test_spread_validates_small_classes_in_distinct_folds_and_never_the_single_row() -> None:
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), SIZES))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "least populated class" warning is silenced under spread
        folds = fold_rows(labels, 5, 0.1, 3, "spread")
    assert len(folds) == 5
    (single,) = np.flatnonzero(labels == 0)
    val = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val), np.setdiff1d(np.arange(len(labels)), [single]))  # each other row once
    for tr, va in folds:
        assert np.array_equal(np.union1d(tr, va), np.arange(len(labels))) and not np.intersect1d(tr, va).size
        assert single in tr and single not in va  # the single row trains in every fold
        assert set(labels[tr]) == {0, 1, 2, 3}  # every class keeps a training row in every fold
        assert np.bincount(labels[va], minlength=4)[3] == 8  # the large class stays stratified
    for c in (1, 2):  # a 2- or 3-row class: each row validated in a different fold
        fold_of = [next(f for f, (_, va) in enumerate(folds) if row in va) for row in np.flatnonzero(labels == c)]
        assert len(set(fold_of)) == SIZES[c]

    def digest(fs: list[tuple[np.ndarray, np.ndarray]]) -> str:
        return hashlib.sha256(b"".join(a.tobytes() for pair in fs for a in pair)).hexdigest()

    assert digest(folds) == digest(fold_rows(labels, 5, 0.1, 3, "spread"))  # a pure function of its inputs
    assert digest(folds) != digest(fold_rows(labels, 5, 0.1, 4, "spread"))  # of the seed too
    # Without classes smaller than k the rule changes nothing: spread's folds are refuse's.
    big = np.repeat([0, 1, 2], [40, 25, 12])
    assert digest(fold_rows(big, 5, 0.1, 7, "spread")) == digest(fold_rows(big, 5, 0.1, 7, "refuse"))


def test_the_rule_enters_fingerprints_and_sweep_keys_only_where_it_can_matter(tmp_path: Path) -> None:
    import dataclasses

    import optuna

    from benchmark.core.config_sections import DataConfig
    from benchmark.core.study_data import ModelDirs
    from studies.run.fingerprint import check_fingerprint, data_settings, fingerprint
    from studies.trials.sweep_store import sweep_key

    # Left out at its default and without folds: fingerprints and sweep keys made before the key existed hold.
    for data in (DataConfig(), DataConfig(cv_folds=5), DataConfig(cv_small_classes="spread")):
        assert data_settings(data) == {k: v for k, v in dataclasses.asdict(data).items() if k != "cv_small_classes"}
    assert data_settings(DataConfig(cv_folds=5, cv_small_classes="spread"))["cv_small_classes"] == "spread"

    m = make_model(tmp_path, n_train=20, n_test=10, hidden=4, num_layers=1)
    dirs = {"m": ModelDirs(m.train_dir, m.test_dir)}
    base = {"paths.cache_dir": str(tmp_path), "extract.models": ("m",)}

    def cfg(**data: object) -> BenchConfig:
        return load_config(env={}, **base, **{f"data.{k}": v for k, v in data.items()})

    assert fingerprint(cfg(), models_only(dirs)) == fingerprint(cfg(cv_small_classes="spread"), models_only(dirs))
    assert sweep_key(dirs["m"], cfg()) == sweep_key(dirs["m"], cfg(cv_small_classes="spread"))
    refuse, spread = cfg(cv_folds=5), cfg(cv_folds=5, cv_small_classes="spread")
    assert sweep_key(dirs["m"], refuse) != sweep_key(dirs["m"], spread)
    # A study created under one rule is not resumed under the other.
    study = optuna.create_study()
    check_fingerprint(study, fingerprint(spread, models_only(dirs)))
    check_fingerprint(study, fingerprint(spread, models_only(dirs)))
    with pytest.raises(UserError, match=r"other settings \(data differ\)"):
        check_fingerprint(study, fingerprint(refuse, models_only(dirs)))


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
    for u, (tr, va) in enumerate(fold_rows(y, cv_folds, 0.1, 0, "refuse")):
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
        tied += int(4 in select(list(five)).tied)  # the one-SE tie set of studies.choice.selection
    assert folds > single  # measured: 40 vs 16 of 50
    assert tied >= 45  # measured: 46 of 50
