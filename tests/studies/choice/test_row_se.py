"""Calibrated tie sets (studies.choice.row_se): per-row paired SE by hand, unpaired rows, planted-signal coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from studies.choice.row_se import ValRows, calibrated_se, corrected_resampled_se, paired, row_se, unpaired_se
from studies.choice.selection import Units, select


def _rows(rows: list[int], pred: list[int], label: list[int], sizes: list[int], ratio: float = 0.25) -> ValRows:
    return ValRows(*(np.asarray(v, dtype=np.int64) for v in (rows, pred, label, sizes)), ratio)


LABEL = [0, 1, 1, 0, 1, 0]


def test_per_row_paired_se_equals_a_hand_computation() -> None:
    # one split of 6 rows, 2 seeds: unit 0 = seed 0, unit 1 = seed 1 (rows repeated)
    a = _rows([0, 1, 2, 3, 4, 5] * 2, [0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0], LABEL * 2, [6, 6])
    b = _rows([0, 1, 2, 3, 4, 5] * 2, [1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1], LABEL * 2, [6, 6])
    # correctness averaged over seeds, per row: a = 1, 1, .5, 1, .5, 1 ; b = .5, 1, 1, .5, .5, 0
    d = np.array([0.5, 0.0, -0.5, 0.5, 0.0, 1.0])
    hand = math.sqrt(((d - d.mean()) ** 2).sum() / 5 / 6)
    assert row_se(a, b) == pytest.approx(hand, abs=1e-12)
    # the corrected resampled term: unit accuracies a = 5/6, 5/6; b = 3/6, 4/6; deltas 2/6, 1/6
    delta = np.array([2 / 6, 1 / 6])
    corrected = math.sqrt((1 / 2 + 0.25) * delta.var(ddof=1))
    assert corrected_resampled_se(a, b) == pytest.approx(corrected, abs=1e-12)
    assert calibrated_se(a, b) == pytest.approx(max(hand, corrected), abs=1e-12)


def test_one_split_one_seed_has_a_non_zero_se() -> None:
    a = _rows(range(6), [0, 1, 1, 0, 0, 0], LABEL, [6])
    b = _rows(range(6), [1, 1, 1, 0, 0, 1], LABEL, [6])
    d = np.array([1, 1, 1, 1, 0, 1]) - np.array([0, 1, 1, 1, 0, 0])
    assert calibrated_se(a, b) == pytest.approx(d.std(ddof=1) / math.sqrt(6), abs=1e-12)
    assert calibrated_se(a, b) > 0.15  # the old per-unit SE of this pair: 0
    assert corrected_resampled_se(a, b) == 0.0  # one unit: no fold-level term


def test_a_candidate_scored_on_other_rows_is_never_paired() -> None:
    a = _rows(range(6), [0, 1, 1, 0, 0, 0], LABEL, [6])
    other = _rows(range(6, 12), [0, 1, 1, 0, 0, 0], LABEL, [6])  # the same predictions, on other rows
    relabelled = _rows(range(6), [0, 1, 1, 0, 0, 0], [1, 1, 1, 0, 1, 0], [6])  # same rows, other labels
    for b in (other, relabelled):
        assert not paired(a, b)
        ca, cb = a.per_row()[1], b.per_row()[1]
        assert row_se(a, b) == calibrated_se(a, b) == pytest.approx(unpaired_se(ca, cb), abs=1e-12)
    assert calibrated_se(a, other) > 0  # identical correctness, but on other rows: not a certain zero difference
    with_units = Units([5 / 6], (1, 1), a)
    assert select([with_units, Units([5 / 6], (1, 1), other)]).diff_se[1] == pytest.approx(calibrated_se(a, other))


def test_compact_artifact_round_trips() -> None:
    a = _rows([3, 1, 2, 0], [0, 1, 1, 0], [0, 1, 0, 0], [2, 2], 0.125)
    back = ValRows.from_bytes(a.to_bytes())
    for field in ("rows", "pred", "label", "sizes"):
        assert np.array_equal(getattr(back, field), getattr(a, field))
    assert back.ratio == 0.125


# Planted signal: layer 3 separates the classes best; its neighbours are close. Rows share most of their noise
# across layers (as a model's layers do), folds share training rows, and seeds are bootstraps of a fold's rows.
PLANTED_MU = (0.3, 0.45, 0.5, 0.6, 0.5)
PLANTED = 3


def _layers(rng: np.random.Generator, n: int, rho: float = 0.8) -> tuple[list[np.ndarray], np.ndarray]:
    y = rng.integers(0, 2, n)
    shared = rng.standard_normal((n, 4))
    xs = []
    for mu in PLANTED_MU:
        x = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal((n, 4))
        x[:, 0] += mu * (2 * y - 1)
        xs.append(x)
    return xs, y


def _centroid(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    b = rng.integers(0, len(y_tr), len(y_tr))  # the seed: a bootstrap of the fold's training rows
    m0, m1 = x_tr[b][y_tr[b] == 0].mean(0), x_tr[b][y_tr[b] == 1].mean(0)
    return (np.linalg.norm(x_va - m1, axis=1) < np.linalg.norm(x_va - m0, axis=1)).astype(np.int64)


def _draw(draw: int, folds: int, seeds: int, n: int = 400) -> tuple[list[Units], list[Units]]:
    """One draw's candidates (layers), without and with their per-row predictions."""
    rng = np.random.default_rng(draw)
    xs, y = _layers(rng, n)
    perm = rng.permutation(n)
    parts = np.array_split(perm, folds) if folds >= 2 else [perm[: n // 4]]
    cuts = [(np.setdiff1d(np.arange(n), p), np.sort(p)) for p in parts]
    old, new = [], []
    for x in xs:
        preds, rows, accs = [], [], []
        for tr, va in cuts:
            for s in range(seeds):
                p = _centroid(x[tr], y[tr], x[va], np.random.default_rng([draw, s, len(tr)]))
                preds.append(p)
                rows.append(va)
                accs.append(float((p == y[va]).mean()))
        every = np.concatenate(rows)
        ratio = float(np.mean([len(va) / len(tr) for tr, va in cuts]))
        vr = ValRows(every, np.concatenate(preds), y[every], np.array([len(r) for r in rows]), ratio)
        old.append(Units(accs, (len(cuts), seeds)))
        new.append(Units(accs, (len(cuts), seeds), vr))
    return old, new


@pytest.mark.parametrize(("folds", "seeds"), [(5, 3), (0, 1)])
def test_planted_layer_is_covered_by_the_calibrated_tie_set(folds: int, seeds: int) -> None:
    covered_old = covered_new = 0
    for draw in range(50):
        old, new = _draw(draw, folds, seeds)
        covered_old += PLANTED in select(old).tied
        covered_new += PLANTED in select(new).tied
    assert covered_new >= 45  # >= 90% of 50 draws
    assert covered_old < covered_new  # the per-unit SE (0 with one split and one seed) covers less often
