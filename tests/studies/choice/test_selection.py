"""``studies.choice.selection``: the tie set on hand-built per-unit scores (paired SE), the ``one-se`` rule's choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.core.config import load_config
from benchmark.core.errors import UserError
from studies.choice.selection import (
    cost_gflops,
    cost_key,
    laid_out,
    layer_cost,
    order,
    paired_se,
    select,
    standard_error,
)

# Five units (e.g. 5 folds x 1 seed), every candidate scored on the same ones.
A = [0.80, 0.82, 0.78, 0.81, 0.79]  # mean .80: the best
# A - B = [.01, .02, 0, .01, .01]: mean .01, sd sqrt(.0002 / 4), SE .00316 < .01 -> not tied
B = [0.79, 0.80, 0.78, 0.80, 0.78]
# A - C = [-.01, .03, -.02, .03, -.01]: mean .004, sd sqrt(.00232 / 4) = .02408, SE .01077 >= .004 -> tied
C = [0.81, 0.79, 0.80, 0.78, 0.80]
D = [0.80]  # one unit, mean equal to the best's: unpaired, so SE 0, tied on exact equality
E = [0.799]  # one unit, .001 below: SE 0 -> not tied
UNITS = [A, B, C, D, E]
# (models, fused width, feature bytes, deepest layer): C and D are single models, D the shallower
COSTS = [
    cost_key(0, 2, 64, 2e6, 12),
    cost_key(0, 1, 32, 1e6, 3),
    cost_key(0, 1, 32, 1e6, 9),
    cost_key(0, 1, 32, 1e6, 5),
    cost_key(0, 1, 16, 5e5, 1),
]


def test_tie_set_equals_hand_computation() -> None:
    s = select(UNITS)
    assert s.best == 0 and s.chosen == 0 and s.rule == "argmax"
    assert s.tied == (0, 2, 3)
    assert s.mean == pytest.approx([0.80, 0.79, 0.796, 0.80, 0.799])
    assert s.diff_se[1] == pytest.approx(math.sqrt(0.0002 / 4) / math.sqrt(5))
    assert s.diff_se[2] == pytest.approx(math.sqrt(0.00232 / 4) / math.sqrt(5))
    assert (s.diff_se[0], s.diff_se[3], s.diff_se[4]) == (0.0, 0.0, 0.0)
    assert s.se[0] == pytest.approx(np.std(A, ddof=1) / math.sqrt(5)) and s.se[3] == 0.0


def test_one_se_picks_the_cheapest_tied_candidate() -> None:
    s = select(UNITS, COSTS, "one-se")
    # B (one model, layer 3) and E (width 16) are cheaper but not tied; of the tied C and D, D is shallower
    assert s.best == 0 and s.tied == (0, 2, 3) and s.chosen == 3
    fewer_models = select(
        UNITS, [cost_key(0, 2, 1, 1, 1), COSTS[1], cost_key(0, 3, 1, 1, 0), cost_key(0, 2, 1, 1, 0), COSTS[4]], "one-se"
    )
    assert fewer_models.chosen == 3  # A and D have 2 models, C 3; D's layer 0 beats A's 1
    same_cost = select(UNITS, [cost_key(0, 1, 1, 1, 1)] * 5, "one-se")
    assert same_cost.chosen == 0  # equal costs: the higher mean, then the earlier candidate


def test_equal_means_keep_the_callers_order_and_unknown_costs_sort_last() -> None:
    s = select([[0.5, 0.7], [0.7, 0.5]])  # equal means, differences [-.2, .2]: SE .2, tied
    assert (s.best, s.tied) == (0, (0, 1))
    assert (
        select([[0.5, 0.7], [0.7, 0.5]], [cost_key(0, math.nan, 1, 1, 1), cost_key(0, 1, 1, 1, 1)], "one-se").chosen
        == 1
    )
    nan = select([[math.nan], [0.4]])
    assert (nan.best, nan.tied) == (1, (1,))


def test_standard_errors_and_bad_input() -> None:
    assert standard_error([0.5]) == 0.0 and math.isnan(standard_error([]))
    assert paired_se([0.1, 0.2], [0.1]) == 0.0  # unequal units cannot be paired
    with pytest.raises(ValueError, match="argmax, one-se"):
        select([[0.5]], rule="best")
    with pytest.raises(ValueError, match="no candidate"):
        select([[math.nan]])


def test_selection_rule_config_key() -> None:
    assert load_config(env={}).selection.rule == "argmax"
    assert load_config(env={}, overrides=["selection.rule=one-se"]).selection.rule == "one-se"
    with pytest.raises(UserError, match=r"selection.rule='1se' is not valid.*argmax, one-se"):
        load_config(env={}, overrides=["selection.rule=1se"])


def test_units_pair_only_within_one_layout() -> None:
    from studies.choice.selection import Units, paired_se, unit_layout

    best = [0.80, 0.82, 0.84, 0.86, 0.88]
    other = [0.79, 0.80, 0.85, 0.84, 0.86]  # mean 0.828 against 0.84
    folds, seeds = unit_layout(5, 1), unit_layout(5, 5)
    assert (folds, seeds, unit_layout(6, 4)) == ((5, 1), (1, 5), (6, 1))
    same = paired_se(Units(best, folds), Units(other, folds))
    assert same == pytest.approx(paired_se(best, other)) and same > 0
    # 5 folds x 1 seed against 1 split x 5 seeds: five units each, but not the same ones: never paired
    assert paired_se(Units(best, folds), Units(other, seeds)) == 0.0
    s = select([Units(best, folds), Units(other, seeds)])
    assert s.diff_se[1] == 0.0 and s.tied == (0,)
    s = select([Units(best, folds), Units(other, folds)])
    assert s.diff_se[1] == pytest.approx(same)


def test_order_ranks_by_the_rules_tie_breaks() -> None:
    # val/acc first; on equal val/acc the higher val/f1 (NaN after any number), then the lower trial, then the lower
    # layer; fully equal keys keep the order given (candidates 5 and 6).
    val = [0.8, 0.9, 0.9, 0.9, 0.9, float("nan"), 0.9, 0.9]
    f1 = [0.9, float("nan"), 0.7, 0.7, 0.7, 0.9, 0.7, 0.8]
    trial = [0, 0, 3, 2, 2, 0, 2, 9]
    layer = [0, 0, 0, 5, 1, 0, 1, 0]
    assert order(val, f1, trial, layer).tolist() == [7, 4, 6, 3, 2, 1, 0, 5]
    # without layers, equal keys up to the trial keep the order given
    assert order(val, f1, trial).tolist() == [7, 3, 4, 6, 2, 1, 0, 5]
    assert order([], [], []).tolist() == []


def test_laid_out_and_costs() -> None:
    units = laid_out([0.8, 0.7, 0.9, 0.6], 2, None)
    assert tuple(units) == (0.8, 0.7, 0.9, 0.6) and units.layout == (2, 2) and units.rows is None
    assert laid_out([0.8, 0.7, 0.9], 2).layout == (3, 1)  # not divisible: one fold per unit
    assert laid_out([0.8, 0.7], float("nan")).layout == (2, 1)  # unknown seeds: one per unit
    assert laid_out([0.8], 0).layout == (1, 1)
    assert layer_cost(1.5, 4) == cost_key(1.5, 1, 0, 0, 4) == (1.5, 1.0, 0.0, 0.0, 4.0)
    assert cost_gflops(layer_cost(1.5, 4)) == 1.5
    assert cost_gflops(layer_cost(float("nan"), 4)) is None  # unknown GFLOPs sort last and read back as None
    assert cost_gflops(None) is None and cost_gflops(()) is None
