"""The selection rule, its tie set and its cost ranking, over candidates scored on the same validation units (numpy).

The one home of the rule: studies and reports call it, neither re-implements it. ``order`` ranks candidates by the
rule's tie-breaks (``SELECTION_RULE``); ``select`` finds the best, its tie set and the rule's choice; ``cost_key``
(and ``layer_cost``) build the ``one-se`` cost tuple and ``cost_gflops`` reads its first part back.

A unit is one (fold, seed) fit; every candidate of a ranking is scored on the same units, in the same order, so
two candidates are compared pairwise, unit by unit. The best candidate is the argmax of the mean over units (on
equal means, the first in the order the caller gives, which carries the caller's tie-breaks). The tie set is every
candidate whose mean is within one standard error of the best's. A candidate with unscored (NaN) units, one the
race or the probe of ``studies.trials.racing`` stopped early, is never the best, tied or chosen. The standard error of a
difference to the best is the calibrated one of ``studies.choice.row_se`` where both candidates carry their per-row
validation predictions (``Units.rows``), else (runs from before them) that of the paired per-unit differences.
``argmax`` chooses the best; ``one-se`` chooses the cheapest tied candidate: fewest computed GFLOPs per text, then
fewest models, then smallest fused width / feature bytes, then shallowest layer (the order of the caller's cost
tuples), then the higher mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmark.core.config_sections import SELECTION_RULES
from studies.choice.row_se import METHOD_TEXT, ValRows, calibrated_se

ARGMAX, ONE_SE = SELECTION_RULES
SELECTION_RULE = (
    "validation-selected: highest mean val/acc over units, ties broken by higher val/f1, then lower trial number, "
    "then lower layer index; test accuracy is reported for the chosen configuration only"
)
EQUAL = 1e-12  # means this close are equal: the same accuracy summed in another order differs in the last bits
RULE_TEXT = {
    ARGMAX: "argmax: the highest mean validation accuracy over units",
    ONE_SE: (
        "one-se: among the candidates tied with the best (mean validation accuracy within one standard error of "
        f"the difference to the best: {METHOD_TEXT}), the cheapest: fewest computed GFLOPs per text, then fewest "
        "models, then smallest fused width and feature bytes, then shallowest layer"
    ),
}


@dataclass(frozen=True)
class Selection:
    """One ranking's outcome; indices refer to the candidates in the order given.

    Attributes:
        rule: The rule that chose (``argmax`` or ``one-se``).
        best: Index of the highest mean (first of equal means).
        chosen: Index the rule chose (``best`` under ``argmax``).
        tied: Indices tied with the best, ``best`` included, in the order given.
        mean: Mean over units per candidate (NaN: no score, never tied).
        se: Standard error of each candidate's own units (std ddof=1 / sqrt(n); 0 with one unit).
        diff_se: Standard error of the difference to the best (0 for the best itself): calibrated
            (``studies.choice.row_se``) where both carry per-row predictions, else of the paired per-unit differences (0
            where those cannot be paired: a single unit or unequal counts, so those tie only on equal means).
    """

    rule: str
    best: int
    chosen: int
    tied: tuple[int, ...]
    mean: np.ndarray
    se: np.ndarray
    diff_se: np.ndarray

    def is_tied(self, index: int) -> bool:
        """Whether candidate ``index`` is in the tie set."""
        return index in self.tied


class Units(tuple[float, ...]):
    """One candidate's per-unit scores with their layout ``(folds, seeds)``.

    Unit u is fold ``u // seeds``, seed ``u % seeds``: two candidates pair unit by unit only when their layouts are
    equal (5 folds x 1 seed and 1 split x 5 seeds both have 5 units, but not the same ones). Plain sequences have
    no layout and pair on equal counts. ``rows``: the units' per-row validation predictions, when recorded.
    """

    layout: tuple[int, int] | None
    rows: ValRows | None

    def __new__(
        cls, values: Sequence[float], layout: tuple[int, int] | None = None, rows: ValRows | None = None
    ) -> Units:
        """``values`` as floats, with ``layout`` and ``rows``."""
        obj = super().__new__(cls, (float(v) for v in values))
        obj.layout, obj.rows = layout, rows
        return obj


def unit_layout(n_units: int, seeds: int) -> tuple[int, int]:
    """``(folds, seeds)`` of ``n_units`` units of a run with ``seeds`` seeds (one fold per unit if not divisible)."""
    return (n_units // seeds, seeds) if seeds >= 1 and n_units % seeds == 0 else (n_units, 1)


def laid_out(values: Sequence[float], seeds: float, rows: ValRows | None = None) -> Units:
    """A run's per-unit scores with their (folds, seeds) layout, so that only the same units pair, and their rows.

    ``seeds``: the run's seed count (NaN or 0: one per unit).
    """
    n = int(seeds) if seeds == seeds and seeds else 1
    return Units(values, unit_layout(len(values), n), rows)


def order(
    val_acc: Sequence[float] | np.ndarray,
    val_f1: Sequence[float] | np.ndarray,
    trial: Sequence[float] | np.ndarray,
    layer: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the candidates best first by the rule's tie-breaks (``SELECTION_RULE``), a stable order.

    Highest ``val_acc``, then highest ``val_f1``, then lowest trial number, then lowest layer (none given: all equal);
    a NaN score sorts after any number.
    """

    def descending(values: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        return -np.where(np.isnan(arr), -np.inf, arr)

    depth = np.zeros(len(val_acc)) if layer is None else np.asarray(layer)
    return np.lexsort((depth, np.asarray(trial), descending(val_f1), descending(val_acc)))


def _units(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr: np.ndarray = np.asarray(values, dtype=float).ravel()
    finite: np.ndarray = arr[np.isfinite(arr)]
    return finite


def standard_error(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean of per-unit scores: std (ddof=1) / sqrt(n); 0 with one unit, NaN with none."""
    arr = _units(values)
    if arr.size == 0:
        return math.nan
    return float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0


def paired_se(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Standard error of the per-unit differences ``a - b``; 0 when they cannot be paired.

    They cannot with unequal or single units, or as ``Units`` of different layouts.
    """
    la, lb = getattr(a, "layout", None), getattr(b, "layout", None)
    if la is not None and lb is not None and la != lb:
        return 0.0
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.size != y.size or x.size < 2:
        return 0.0
    d = x - y
    d = d[np.isfinite(d)]
    return float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0


def diff_se(best: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray) -> float:
    """SE of ``mean(best) - mean(other)``: calibrated from per-row predictions where both have them, else paired."""
    ra, rb = getattr(best, "rows", None), getattr(other, "rows", None)
    if ra is not None and rb is not None:
        return calibrated_se(ra, rb)
    return paired_se(best, other)


def cost_key(gflops: float, n_models: float, width: float, feature_bytes: float, layer: float) -> tuple[float, ...]:
    """The ``one-se`` cost of a candidate as a sortable tuple; an unknown (NaN) part sorts as the most expensive."""
    return tuple(
        math.inf if v is None or math.isnan(float(v)) else float(v)
        for v in (gflops, n_models, width, feature_bytes, layer)
    )


def layer_cost(gflops: float, layer: float) -> tuple[float, ...]:
    """The ``one-se`` cost of one layer of one model: every layer of a model has the same width and bytes."""
    return cost_key(gflops, 1, 0, 0, layer)


def cost_gflops(cost: Sequence[float] | None) -> float | None:
    """A cost tuple's GFLOPs per text (its first part), None when unknown."""
    parts = tuple(cost or ())
    return float(parts[0]) if parts and math.isfinite(float(parts[0])) else None


def select(
    units: Sequence[Sequence[float] | np.ndarray],
    costs: Sequence[tuple[float, ...]] | None = None,
    rule: str = ARGMAX,
) -> Selection:
    """The best candidate, its tie set and the rule's choice.

    Args:
        units: Per candidate, its per-unit validation accuracies (aligned units across candidates; a single value
            for a candidate scored once). The order is the caller's tie-break order: on equal means, earlier wins.
        costs: Per candidate, a cost tuple compared lexicographically (see ``cost_key``); without costs ``one-se``
            chooses the best.
        rule: ``argmax`` or ``one-se``.

    Returns:
        The ``Selection``.

    Raises:
        ValueError: an unknown rule, no candidate with a score, or costs of another length than ``units``.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule {rule!r} is not known; choose one of: {', '.join(SELECTION_RULES)}")
    if costs is not None and len(costs) != len(units):
        raise ValueError(f"{len(costs)} costs for {len(units)} candidates")
    mean = np.array([float(_units(u).mean()) if _units(u).size else math.nan for u in units])
    if not np.isfinite(mean).any():
        raise ValueError("no candidate has a validation score")
    # A candidate with unscored units left the race (or the probe dropped it): never in contention.
    eligible = np.array([np.isfinite(np.asarray(u, dtype=float)).all() for u in units]) & np.isfinite(mean)
    if not eligible.any():  # no complete candidate (runs recorded before racing): rank what was scored
        eligible = np.isfinite(mean)
    top = float(np.max(mean[eligible]))
    best = int(np.flatnonzero(eligible & (mean >= top - EQUAL))[0])
    se = np.array([standard_error(u) for u in units])
    diffs = np.array([0.0 if i == best else diff_se(units[best], u) for i, u in enumerate(units)])
    tied = tuple(int(i) for i in np.flatnonzero(eligible & (mean[best] - mean <= diffs + EQUAL)))
    chosen = best
    if rule == ONE_SE and costs is not None:
        chosen = min(tied, key=lambda i: (tuple(costs[i]), -round(float(mean[i]), 12), i))
    return Selection(rule, best, int(chosen), tied, mean, se, diffs)
