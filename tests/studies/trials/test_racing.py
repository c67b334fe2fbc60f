"""The probe and the race of a sweep (``studies.trials.racing``, ``lightning_modules.probe``): what they drop, keep."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_features import write_cache

from benchmark.core.config import BenchConfig, load_config, with_values
from benchmark.core.study_data import ModelDirs
from lightning_modules.fit import sweep_units
from lightning_modules.scores import LayerScore
from studies.choice.selection import Units, select
from studies.trials import sweep_store
from studies.trials.best_layers import choose_layer
from studies.trials.racing import probe_keep, race_drop, screen_outcome, sweep_screen

LOSS_TOL = 1e-5  # stacked vs single GEMMs on Intel (tests/lightning_modules/test_sweep.py)
PLANTED = (0.1, 0.2, 0.3, 1.5, 1.4, 0.4, 0.2, 0.3)  # class signal per layer: layer 3 best, layer 4 a near tie


def _cfg(**values: Any) -> BenchConfig:
    base = {
        "train.max_epochs": 30,
        "train.lr": 5e-3,
        "train.batch_size": 32,
        "train.patience": 4,
        "train.hidden_dims": (16,),
        "data.cv_folds": 5,
        "study.seeds": 2,
    }
    return with_values(load_config(env={}), {**base, **values})


def _planted(root: Path, n_train: int = 400, n_test: int = 200) -> ModelDirs:
    """A model of 8 hidden states whose class signal is ``PLANTED`` (unit-norm class centres plus N(0, 1) noise)."""
    rng = np.random.default_rng(0)
    n, hidden = n_train + n_test, 16
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    centres = rng.normal(size=(2, hidden))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    feats = rng.normal(size=(len(PLANTED), n, hidden)) + np.array(PLANTED)[:, None, None] * centres[labels][None]
    feats = feats.astype(np.float32)
    train = write_cache(root, "planted", "train", feats[:, :n_train], labels[:n_train])
    test = write_cache(root, "planted", "test", feats[:, n_train:], labels[n_train:])
    return ModelDirs(train, test)


def _val(scores: list[list[LayerScore]]) -> np.ndarray:
    return np.array([[s.val_acc for s in unit] for unit in scores]).T  # (layers, units)


def test_probe_keeps_every_candidate_within_its_margin_and_the_deepest() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    best = (rng.random(n) < 0.80).astype(float)
    near = best.copy()
    near[rng.choice(np.flatnonzero(best), 30, replace=False)] = 0  # 1.5 points behind, on the same rows
    far = (rng.random(n) < 0.60).astype(float)
    deep = (rng.random(n) < 0.55).astype(float)
    correct = np.stack([far, best, near, far, deep])
    assert probe_keep(correct, z=3.0, margin=0.02, protect={4}) == [1, 2, 4]  # 1.5 points: inside the margin
    assert probe_keep(correct, z=3.0, margin=0.0, protect={4}) == [1, 4]  # the paired test alone: 30 rows are ~5.5 SE
    assert probe_keep(correct, z=6.0, margin=0.0, protect={4}) == [1, 2, 4]
    assert probe_keep(correct, z=0.0, margin=0.25, protect={4}) == [0, 1, 2, 3, 4]
    assert probe_keep(correct, z=0.0, margin=0.0, protect={0}) == [0, 1]


def test_race_drops_a_layer_many_calibrated_ses_behind_the_leader_and_never_the_deepest(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    (tmp_path / "labels.npy").write_bytes(b"")
    np.save(tmp_path / "labels.npy", labels)
    d = ModelDirs(tmp_path, tmp_path)
    folds = np.array_split(rng.permutation(400), 2)

    def heads(layer: int, accuracy: float) -> list[LayerScore]:
        out = []
        for rows in folds:
            rows = np.sort(rows)
            pred = np.where(rng.random(rows.size) < accuracy, labels[rows], 1 - labels[rows])
            acc = float((pred == labels[rows]).mean())
            out.append(LayerScore(acc, acc, 0.5, 0.5, 0.5, 1, 2, layer=layer, val_pred=pred, val_rows=rows))
        return out

    scores = {0: heads(0, 0.55), 1: heads(1, 0.85), 2: heads(2, 0.84), 3: heads(3, 0.5)}
    assert race_drop(d, scores, z=3.0) == [0]  # 30 points behind; 2 is a near tie; 3 is the deepest
    assert race_drop(d, scores, z=1000.0) == []


def test_selection_never_ties_or_chooses_a_candidate_with_unscored_units() -> None:
    raced_out = Units([0.9, 0.9, math.nan, math.nan])  # high on its first folds, then dropped
    s = select([Units([0.80, 0.82, 0.81, 0.80]), raced_out, Units([0.79, 0.81, 0.82, 0.80])], rule="one-se")
    assert s.best == 0 and not s.is_tied(1) and s.is_tied(2) and s.chosen == 0
    assert select([Units([0.5, math.nan])]).best == 0  # nothing complete (older runs): rank what was scored


def test_planted_layer_and_its_near_tie_survive_the_probe_and_the_race(tmp_path: Path) -> None:
    d = _planted(tmp_path)
    cfg = _cfg()
    full = sweep_units(d.train, d.test, cfg, 2)
    raced = sweep_units(d.train, d.test, cfg, 2, screen=sweep_screen(cfg, d))
    layers = list(range(len(PLANTED)))
    outcome = {o["layer"]: o for o in screen_outcome(raced) or []}
    units = len(full)
    assert outcome[3]["units_trained"] == outcome[4]["units_trained"] == outcome[7]["units_trained"] == units
    stopped = [layer for layer, o in outcome.items() if o["stopped"]]
    assert stopped and set(stopped) <= {0, 1, 2, 5, 6}  # weak layers only, and some of them
    assert all(np.isfinite(o["probe_acc"]) for o in outcome.values())
    assert outcome[3]["probe_acc"] > 0.8 > outcome[0]["probe_acc"]
    for u, (f_unit, r_unit) in enumerate(zip(full, raced, strict=True)):  # a head that trained is the full grid's
        for f, r in zip(f_unit, r_unit, strict=True):
            if r.epochs:
                assert (r.val_acc, r.test_acc, r.best_epoch) == (f.val_acc, f.test_acc, f.best_epoch), (u, r.layer)
                assert r.val_loss == pytest.approx(f.val_loss, abs=LOSS_TOL)
                assert np.array_equal(r.val_pred, f.val_pred)
            else:
                assert math.isnan(r.val_acc) and r.screened in ("probe", *(f"race: after fold {k}" for k in range(5)))
    for rule in ("argmax", "one-se"):
        a, b = choose_layer(_val(full), layers, rule), choose_layer(_val(raced), layers, rule)
        assert b.chosen == a.chosen and layers[a.chosen] in (3, 4)
        assert set(b.tied) == set(a.tied) - set(stopped)
        assert {3, 4} & set(b.tied) == {3, 4} & set(a.tied)


def test_race_false_trains_every_head_under_the_unraced_store_key(tmp_path: Path) -> None:
    d = _planted(tmp_path, n_train=200, n_test=100)
    off = _cfg(**{"study.race": False, "data.cv_folds": 2, "train.max_epochs": 6})
    on = with_values(off, {"study.race": True})
    assert sweep_screen(off, d) is None
    assert sweep_store.sweep_key(d, off) == sweep_store.sweep_key(d, with_values(off, {"study.race_z": 9.0}))
    assert sweep_store.sweep_key(d, on) != sweep_store.sweep_key(d, off)
    assert sweep_store.sweep_key(d, on) != sweep_store.sweep_key(d, with_values(on, {"study.race_z": 9.0}))
    stored = sweep_store.unit_sweep(d, off).scores
    plain = sweep_units(d.train, d.test, off, 2)
    assert [[s.epochs > 0 and s.screened == "" and math.isnan(s.probe_acc) for s in u] for u in stored] == [
        [True] * len(PLANTED)
    ] * 4
    assert _val(stored).tolist() == _val(plain).tolist()
    # the same code path in one process: equal to the bit (JSON keeps a float's repr exactly)
    assert [[s.val_loss for s in u] for u in stored] == [[s.val_loss for s in u] for u in plain]


def test_ridge_probe_equals_sklearns_ridge_classifier_cv() -> None:
    import torch
    from sklearn.linear_model import RidgeClassifier, RidgeClassifierCV

    from lightning_modules.probe import ALPHAS, ridge_loo

    rng = np.random.default_rng(3)
    for n, d, c in [(500, 40, 2), (800, 60, 5)]:
        y = rng.integers(0, c, n)
        x = rng.normal(size=(n, d))
        x[:, :5] += 0.5 * y[:, None]
        x = (x - x.mean(axis=0)) / x.std(axis=0)  # as the data module standardises the train part
        weights, intercept, alpha = ridge_loo(torch.from_numpy(x), y, c)
        assert alpha == RidgeClassifierCV(alphas=ALPHAS).fit(x, y).alpha_  # the same leave-one-out choice
        xv = rng.normal(size=(300, d))
        pred = (torch.from_numpy(xv) @ weights + intercept).argmax(dim=1).numpy()
        assert np.array_equal(pred, RidgeClassifier(alpha=alpha).fit(x, y).predict(xv))


def test_speed_race_compares_the_split_the_full_grid_and_the_raced_sweep(tmp_path: Path) -> None:
    from benchmark.bench.race import compare

    d = _planted(tmp_path)
    r = compare(_cfg(**{"study.seeds": 1}), d)
    epochs = r["head_epochs"]
    assert 0 < epochs["raced"] < epochs["full"] and 0 < epochs["split"] < epochs["full"]  # 1 split vs 5 folds
    assert set(r["wall_s"]) == {"split", "full", "raced"} and all(s > 0 for s in r["wall_s"].values())
    stopped = [o["layer"] for o in r["screen"] if o["stopped"]]
    assert stopped and set(stopped) <= {0, 1, 2, 5, 6}
    for rule in ("argmax", "one-se"):
        assert r[rule]["same_choice"] and r[rule]["full"]["chosen"] in (3, 4)
        assert r[rule]["jaccard"] == len(set(r[rule]["raced"]["tied"])) / len(set(r[rule]["full"]["tied"]))


def test_an_interrupted_raced_sweep_resumes_after_its_last_finished_round(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C in the third round of folds: the rerun trains only the rounds left and gives the uninterrupted sweep."""
    from lightning_modules import fit

    d = _planted(tmp_path, n_train=300, n_test=100)
    cfg = _cfg(**{"train.max_epochs": 8, "study.probe_margin": 1.0})  # the probe keeps all: the race drops
    whole = sweep_units(d.train, d.test, cfg, 2, screen=sweep_screen(cfg, d))
    assert {s.screened for s in whole[0]} == {"", "race: after fold 0", "race: after fold 1"}
    trained = fit._train_heads
    rounds: list[list[int]] = []  # the units each call trained
    layers: list[list[int]] = []  # and the layers

    def counted(*args: Any) -> Any:
        if len(rounds) == 2 and not resumed:
            raise KeyboardInterrupt
        rounds.append(list(args[3]))
        layers.append([layer for _, layer in args[4]])
        return trained(*args)

    monkeypatch.setattr(fit, "_train_heads", counted)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        sweep_store.unit_sweep(d, cfg)
    progress = d.train / "sweeps" / f"{sweep_store.sweep_key(d, cfg)}.rounds.json"
    assert progress.is_file() and not progress.with_name(progress.name.replace(".rounds", "")).exists()
    assert [sorted({u // 2 for u in r}) for r in rounds] == [[0], [1]]  # burn-in 1 fold, then fold 1
    resumed, before = True, len(rounds)
    again = sweep_store.unit_sweep(d, cfg)
    assert [sorted({u // 2 for u in r}) for r in rounds[before:]] == [[2], [3], [4]]  # folds 0 and 1 not retrained
    alive = [s.layer for s in whole[0] if not s.screened]
    assert layers[before:] == [alive] * 3  # the race's verdicts after fold 1 are kept, not retaken
    assert not progress.exists()  # the stored sweep replaces it
    for w_unit, a_unit in zip(whole, again.scores, strict=True):
        for w, a in zip(w_unit, a_unit, strict=True):
            assert (a.layer, a.screened, a.epochs, a.best_epoch) == (w.layer, w.screened, w.epochs, w.best_epoch)
            assert a.probe_acc == w.probe_acc
            if w.epochs:
                assert (a.val_acc, a.test_acc) == (w.val_acc, w.test_acc) and np.array_equal(a.val_pred, w.val_pred)
                assert a.val_loss == pytest.approx(w.val_loss, abs=LOSS_TOL)
    assert again.fit_s > 0
