"""The scipy.stats tests in ``benchmark.report.common.stats`` give the p-values of the exact formulas they replaced."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import stdtr

from benchmark.report.common.stats import bootstrap_ci, mcnemar_exact, paired_t


def _exact_mcnemar(b: int, c: int) -> float:
    """The former hand-written test: ``min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])`` in exact integers."""
    n = b + c
    return 1.0 if n == 0 else min(1.0, 2.0 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


def test_mcnemar_p_values_equal_the_exact_formula() -> None:
    for b in range(40):
        for c in range(40):
            a = np.array([True] * b + [False] * c + [True, False])  # plus one pair right in both, one wrong in both
            other = np.array([False] * b + [True] * c + [True, False])
            m = mcnemar_exact(a, other)
            assert (m.only_a, m.only_b) == (b, c)
            assert m.p_value == pytest.approx(_exact_mcnemar(b, c), abs=1e-9)


def test_paired_t_equals_the_student_t_formula() -> None:
    rng = np.random.default_rng(1)
    for n in range(2, 12):
        x = rng.random(n)
        y = x + rng.normal(0.01, 0.02, n)
        d = x - y
        t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
        res = paired_t(x, y)
        assert res.t == pytest.approx(t, rel=1e-12) and res.mean_diff == pytest.approx(d.mean())
        assert res.p_value == pytest.approx(2 * stdtr(n - 1, -abs(t)), abs=1e-9)
    same = paired_t([0.8, 0.9], [0.7, 0.8])  # equal differences: no spread, no test
    assert same.n == 2 and math.isnan(same.t) and math.isnan(same.p_value)


def test_bootstrap_draws_the_former_resamples() -> None:
    # scipy's percentile bootstrap with the same generator draws the same index matrix as the former
    # ``rng.integers(0, n, (samples, n))``, so the seeded interval did not move.
    for values in ([0.82, 0.84, 0.83], [0.7, 0.75, 0.8, 0.72, 0.79], list(np.linspace(0.6, 0.9, 10))):
        arr = np.asarray(values)
        means = arr[np.random.default_rng(0).integers(0, arr.size, size=(10_000, arr.size))].mean(axis=1)
        assert bootstrap_ci(values) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-12)
    assert bootstrap_ci([0.8, 0.8, 0.8]) == (0.8, 0.8)
