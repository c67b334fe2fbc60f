"""The report's rankings as DataFrames: ``studies.choice.selection`` applied to table rows, with the tie columns.

A ranking's candidates are rows of a table (layers of one model, last-k aggregations of one model, fusions of one
pair, model subsets, every configuration of a dataset). ``rank`` orders them by the rule's tie-breaks
(``selection.order``); ``tie`` adds ``n_units``, ``val_acc_se`` (SE of the candidate's own units), ``diff_se`` (SE of
its paired per-unit differences to the best), ``tied_with_best``, ``top`` (the highest mean) and ``picked`` (the
rule's choice, ``selection.select``), from the candidates' ``units`` (per-unit validation accuracies) and ``cost``
(``selection.cost_key``) columns. The rule itself lives in ``studies.choice.selection``; nothing here decides.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.tracking import CV_VAL_ACC, SEED_VAL_ACC, SWEEP_UNITS_ARTIFACT
from studies.choice.candidates import run_cost
from studies.choice.row_se import ValRows
from studies.choice.selection import cost_gflops, laid_out, order, select
from studies.choice.val_record import read_rows, read_sweep_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from benchmark.report.common.runs import ReportData

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


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` sorted best-first by the rule's tie-breaks (``selection.order``; NaN val/f1 sorts after any number)."""
    layer = df["layer"] if "layer" in df else None
    return df.iloc[order(df[tracking.VAL_ACC], df[tracking.VAL_F1], df["trial"], layer)]


def best(df: pd.DataFrame) -> pd.Series | None:
    """The validation-selected row of ``df`` (None when empty or no row has ``val/acc``)."""
    df = df[df[tracking.VAL_ACC].notna()]
    return None if df.empty else rank(df).iloc[0]


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
                        "gflops_per_text": cost_gflops(r.get(COST)),
                    }
                    for r in rows
                    if r["tied_with_best"]
                ],
            }
        )
    return out
