"""Tie sets for every ranking a report makes, and the choice ``selection.rule`` makes among them.

A ranking's candidates are rows of a table (layers of one model, last-k aggregations of one model, fusions of one
pair, model subsets, every configuration of a dataset). ``tie`` ranks them by ``selection.rank`` (the tie-breaks)
and adds ``n_units``, ``val_acc_se`` (SE of the candidate's own units), ``diff_se`` (SE of its paired per-unit
differences to the best), ``tied_with_best``, ``top`` (the highest mean) and ``picked`` (the rule's choice), from the
candidates' ``units`` (per-unit validation accuracies) and ``cost`` (``studies.choice.selection.cost_key``) columns.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.tracking import CV_VAL_ACC, SEED_VAL_ACC, SWEEP_UNITS_ARTIFACT
from studies.choice.candidates import run_cost
from studies.choice.row_se import ValRows
from studies.choice.selection import RULE_TEXT, Units, select, unit_layout
from studies.choice.val_record import read_rows, read_sweep_rows

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import pandas as pd

    from benchmark.report.runs import ReportData

UNITS, COST, SOURCE = "units", "cost", "unit_source"
TIE_COLUMNS = ("n_units", "val_acc_se", "diff_se", "tied_with_best", "top", "picked")
TIED_MARK = "≈"  # appended to a tied cell in grids
UNIT_NOTE = (
    "A unit is one (fold, seed) fit: with data.cv_folds = k >= 2 a configuration has k folds x its seeds units, "
    "with the single validation split one per seed. Per-unit scores are the runs' `cv/val_acc` (layer sweeps: "
    "`cv/sweep_val_acc.npy`). Runs from before cross-validation fall back to their per-seed `seed/val_acc` "
    "(units = seeds), and a score without either (e.g. the unchosen layers of an older sweep) has a standard error "
    "of 0: it ties only on exact equality. Candidates scored on different units (another number, or k folds x 1 "
    "seed against one split x k seeds) are not paired (SE 0)."
)


def units_summary(overall: pd.DataFrame, points: pd.DataFrame) -> str:
    """Where a report's per-unit scores came from, in one sentence (``overall`` and ``points`` with ``unit_source``)."""
    runs = overall[SOURCE].value_counts() if SOURCE in overall else {}
    layers = points[SOURCE].value_counts() if SOURCE in points else {}
    names = {
        CV_VAL_ACC: "per-unit cv/val_acc",
        SEED_VAL_ACC: "per-seed seed/val_acc only",
        tracking.VAL_ACC: "one value",
    }
    parts = [f"{int(runs.get(k, 0))} with {v}" for k, v in names.items() if runs.get(k, 0)]
    swept = int(layers.get(SWEEP_UNITS_ARTIFACT, 0))
    return (
        f"Per-unit scores of this report: of {len(overall)} finished runs, {', '.join(parts) or 'none'}; of "
        f"{len(points)} single-layer points, {swept} from {SWEEP_UNITS_ARTIFACT} and {len(points) - swept} from "
        "their run alone (a sweep's unchosen layers: one value, SE 0)."
    )


def rule_text(rule: str) -> str:
    """The rule as the report names it."""
    return RULE_TEXT[rule]


def trial_candidates(data: ReportData, df: pd.DataFrame, depth: dict[str, int | None]) -> pd.DataFrame:
    """Trial rows (``runs._trial_row`` columns) with their ``units`` (and per-row predictions) and ``cost``."""
    units = [
        laid_out(data.units(r, v), seeds, read_rows(data.artifact(r, tracking.ROWS_ARTIFACT)))
        for r, v, seeds in zip(df["run_id"], df[tracking.VAL_ACC], df["seeds"], strict=True)
    ]
    gflops = df[tracking.PERF_INFER_GFLOPS] if tracking.PERF_INFER_GFLOPS in df else [math.nan] * len(df)
    costs = [
        run_cost(g, n, w, b, layers, depth)
        for g, n, w, b, layers in zip(
            gflops,
            df["n_models"],
            df[tracking.PERF_FUSED_DIM],
            df[tracking.PERF_FEATURE_BYTES],
            df["layers"],
            strict=True,
        )
    ]
    return df.assign(**{UNITS: units, COST: costs, SOURCE: [data.unit_source(r) for r in df["run_id"]]})


def laid_out(values: list[float], seeds: Any, rows: ValRows | None = None) -> Units:
    """A run's per-unit scores with their (folds, seeds) layout, so that only the same units pair, and their rows."""
    n = int(seeds) if seeds == seeds and seeds else 1  # NaN or 0 seeds: one per unit
    return Units(values, unit_layout(len(values), n), rows)


def sweep_units(data: ReportData, run_id: str) -> Any:
    """A layer sweep's per-unit validation scores ``(layers, units)``, or None for a sweep from before them."""
    return data.array(run_id, SWEEP_UNITS_ARTIFACT)


def sweep_rows(data: ReportData, run_id: str) -> list[ValRows | None] | None:
    """A layer sweep's per-layer validation predictions, or None for a sweep from before them."""
    return read_sweep_rows(data.artifact(run_id, tracking.SWEEP_ROWS_ARTIFACT))


def tie(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """``df`` (one ranking, with ``units`` and ``cost``) ranked best first with the tie columns.

    Rows without ``val/acc`` are dropped, except a raced sweep's layers that the probe or the race stopped (they have
    a probe score): those follow the ranked rows, never tied, so that tables and the probe curve still show them.
    """
    import pandas as pd

    from benchmark.report.selection import rank

    ordered = rank(df[df[tracking.VAL_ACC].notna()])
    stopped = df[df[tracking.VAL_ACC].isna() & df.get(tracking.SWEEP_PROBE_ACC, pd.Series(index=df.index)).notna()]
    if ordered.empty:
        return ordered.assign(**{c: [] for c in TIE_COLUMNS})
    s = select(list(ordered[UNITS]), list(ordered[COST]), rule)
    n = range(len(ordered))
    ranked = ordered.assign(
        n_units=[len(u) for u in ordered[UNITS]],
        val_acc_se=s.se,
        diff_se=s.diff_se,
        tied_with_best=[i in s.tied for i in n],
        top=[i == s.best for i in n],
        picked=[i == s.chosen for i in n],
    )
    if stopped.empty:
        return ranked
    out = stopped.assign(
        n_units=0, val_acc_se=math.nan, diff_se=math.nan, tied_with_best=False, top=False, picked=False
    )
    return pd.concat([ranked, out])


def tie_groups(df: pd.DataFrame, keys: list[str], rule: str) -> pd.DataFrame:
    """``tie`` applied to each group of ``df`` by ``keys`` (one ranking per group), groups in key order."""
    import pandas as pd

    parts = [tie(group, rule) for _, group in df.groupby(keys, sort=True)]
    if not parts:
        return df.iloc[0:0].assign(**{c: [] for c in TIE_COLUMNS})
    return pd.concat(parts)


def picked(ranked: pd.DataFrame) -> pd.Series | None:
    """The rule's choice of a ``tie``-ranked frame (None when empty)."""
    rows = ranked[ranked["picked"].astype(bool)] if len(ranked) else ranked
    return None if rows.empty else rows.iloc[0]


def _first_cost(row: Mapping[str, Any]) -> float | None:
    """A candidate's GFLOPs per text (the first part of its ``cost``), None when unknown."""
    cost: tuple[float, ...] = tuple(row.get(COST) or ())
    return float(cost[0]) if cost and math.isfinite(float(cost[0])) else None


def tie_sets(
    ranked: pd.DataFrame, ranking: str, keys: list[str], label: Callable[[Any], str], rule: str
) -> list[dict[str, Any]]:
    """``summary.json`` entries of one kind of ranking: per group, the rule, the best, the choice and the tied."""
    out = []
    for group_key, group in ranked.groupby(keys, sort=True):
        values = group_key if isinstance(group_key, tuple) else (group_key,)
        rows = group.to_dict("records")
        top = [r for r in rows if r["top"]]
        chosen = [r for r in rows if r["picked"]]
        out.append(
            {
                "ranking": ranking,
                **dict(zip(keys, (str(v) for v in values), strict=True)),
                "rule": rule,
                "best": label(top[0]) if top else None,
                "chosen": label(chosen[0]) if chosen else None,
                "tied": [
                    {
                        "candidate": label(r),
                        "val_acc": float(r.get(tracking.VAL_ACC, r.get("val_acc", math.nan))),
                        "val_acc_se": float(r["val_acc_se"]),
                        "diff_se": float(r["diff_se"]),
                        "test_acc": float(r.get(tracking.TEST_ACC, r.get("test_acc", math.nan))),
                        "gflops_per_text": _first_cost(r),
                    }
                    for r in rows
                    if r["tied_with_best"]
                ],
            }
        )
    return out
