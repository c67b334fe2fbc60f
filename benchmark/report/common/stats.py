"""Unit statistics and paired tests: mean ± std, a seeded 95% bootstrap interval, McNemar's exact test, a paired t-test.

A unit is one (fold, seed) fit of a configuration (``lightning_modules.folds``); with the single validation split
the units are its seeds.

The statistics are scipy.stats' (``bootstrap``, ``binomtest``, ``ttest_rel``), imported when first used (about 2 s).
Everything is deterministic (the bootstrap uses a fixed seed) so a report is reproducible byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True, slots=True)
class UnitStats:
    """Summary of one configuration's per-unit scores.

    Attributes:
        n: Number of units (folds x seeds; seeds with the single split).
        mean: Mean over units.
        std: Sample standard deviation (ddof=1); NaN for one unit.
        ci_low: Lower end of the 95% percentile-bootstrap interval of the mean; NaN for one unit.
        ci_high: Upper end of that interval.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return asdict(self)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN with fewer than two values)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean: resample ``values`` with replacement ``samples`` times.

    Args:
        values: Per-unit scores (at least two for a meaningful interval; fewer gives NaNs).
        level: Coverage, 0.95 for a 95% interval.
        samples: Bootstrap resamples.
        seed: Generator seed (fixed so reports are reproducible).

    Returns:
        ``(low, high)`` quantiles ``(1-level)/2`` and ``(1+level)/2`` of the resampled means.
    """
    from scipy.stats import bootstrap

    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return math.nan, math.nan
    if np.ptp(arr) == 0:  # every resample has the same mean (scipy warns on such degenerate data)
        return float(arr[0]), float(arr[0])
    res = bootstrap(
        (arr,),
        np.mean,
        confidence_level=level,
        n_resamples=samples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def unit_stats(values: Sequence[float]) -> UnitStats:
    """Mean, std and bootstrap interval of per-unit scores."""
    mean, std = mean_std(values)
    low, high = bootstrap_ci(values)
    return UnitStats(len(values), mean, std, low, high)


@dataclass(frozen=True, slots=True)
class McNemar:
    """McNemar's exact test on paired predictions of the same test set.

    Attributes:
        only_a: Test examples A gets right and B gets wrong.
        only_b: Test examples B gets right and A gets wrong.
        p_value: Two-sided exact binomial p-value of ``only_a`` vs ``only_b`` (1.0 when they never disagree).
    """

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Two-sided exact McNemar test: the exact binomial test of ``only_a`` successes in ``only_a + only_b`` at 1/2.

    Args:
        correct_a: Boolean per test example, model A right.
        correct_b: Boolean per test example, model B right (same examples, same order).

    Raises:
        ValueError: arrays of different lengths.
    """
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired predictions differ in length: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(only_a, only_b, 1.0)
    return McNemar(only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue))


@dataclass(frozen=True, slots=True)
class PairedT:
    """Paired t-test over units (each unit of A against the same (fold, seed) unit of B).

    Attributes:
        n: Paired units.
        mean_diff: Mean of A - B.
        t: t statistic; NaN when every difference is equal (no spread).
        p_value: Two-sided p-value; NaN when undefined.
    """

    n: int
    mean_diff: float
    t: float
    p_value: float


def paired_t(a: Sequence[float], b: Sequence[float]) -> PairedT:
    """Two-sided paired t-test of ``a`` against ``b`` (needs at least two pairs).

    Raises:
        ValueError: sequences of different lengths.
    """
    from scipy.stats import ttest_rel

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.shape} vs {y.shape}")
    d = x - y
    if d.size < 2:
        return PairedT(int(d.size), float(d.mean()) if d.size else math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(float(d.mean()))):  # equal differences up to rounding: no spread, no test
        return PairedT(int(d.size), float(d.mean()), math.nan, math.nan)
    res = ttest_rel(x, y)
    return PairedT(int(d.size), float(d.mean()), float(res.statistic), float(res.pvalue))
