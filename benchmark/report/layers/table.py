"""Single layers and last-k aggregation: best vs last layer (Table 2), layer grids (Tables 3-4), Figure 3's data."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report.common.labels import last_k, num_layers
from benchmark.report.common.ranking import COST, UNITS, picked, rank, tie_groups, trial_candidates
from benchmark.report.common.rows import UNIT_COLUMNS, frame, unit_columns

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

BEST_LAST_COLUMNS = (
    "dataset",
    "model",
    "source",
    "layers_evaluated",
    "last_layer",
    "last_val_acc",
    "last_test_acc",
    "best_layer",
    "best_val_acc",
    "best_test_acc",
    "gain_val",
    "gain_test",
    "best_run_id",
    "best_study",
    *(f"best_{c}" for c in UNIT_COLUMNS),
    "val_acc_se",
    "tied_with_best",
    "tied_layers",
    "top_layer",
    "rule",
)
LAST_K_COLUMNS = (
    "dataset",
    "model",
    "agg",
    "k",
    tracking.VAL_ACC,
    tracking.VAL_F1,
    tracking.TEST_ACC,
    "trial",
    "run_id",
    *UNIT_COLUMNS,
)


def best_vs_last(data: ReportData, points: pd.DataFrame, depth: dict[str, int | None]) -> pd.DataFrame:
    """Table 2's "Specific Layer" rows: per dataset and model, the last layer vs the layer chosen on validation.

    ``points`` are ``layer_points`` ranked per (dataset, model) by ``ranking.tie_groups``; ``best_*`` describe the
    layer the rule picked. Gains are best minus last (positive = choosing the layer on validation beat the last
    layer). ``val_acc_se``: the picked layer's standard error over units; ``tied_with_best``: the last layer is
    tied with the best (so choosing a layer did not beat it by more than one standard error); ``tied_layers``: every
    layer tied with the best; ``top_layer``: the highest mean (the ``argmax`` choice).
    """
    rows = []
    for (dataset, model), group in points.groupby(["dataset", "model"], sort=True):
        chosen = picked(group)
        if chosen is None:
            continue
        last = depth.get(str(model))  # None: depth unknown, so no last-layer comparison
        at_last = group[group["layer"] == last]
        last_val = float(at_last[tracking.VAL_ACC].iloc[0]) if len(at_last) else math.nan
        last_test = float(at_last[tracking.TEST_ACC].iloc[0]) if len(at_last) else math.nan
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "source": chosen["source"],
            "layers_evaluated": len(group),
            "last_layer": last,
            "last_val_acc": last_val,
            "last_test_acc": last_test,
            "best_layer": int(chosen["layer"]),
            "best_val_acc": float(chosen[tracking.VAL_ACC]),
            "best_test_acc": float(chosen[tracking.TEST_ACC]),
            "gain_val": float(chosen[tracking.VAL_ACC]) - last_val,
            "gain_test": float(chosen[tracking.TEST_ACC]) - last_test,
            "best_run_id": chosen["run_id"],
            "best_study": chosen["study"],
            "val_acc_se": float(chosen["val_acc_se"]),
            "tied_with_best": bool(at_last["tied_with_best"].iloc[0]) if len(at_last) else False,
            "tied_layers": " ".join(str(int(x)) for x in sorted(group.loc[group["tied_with_best"], "layer"])),
            "top_layer": int(group.loc[group["top"], "layer"].iloc[0]),
            "rule": data.rule,
        }
        own = bool(chosen["own"])
        row.update(
            unit_columns(data, chosen["run_id"], "best_")
            if own
            else dict.fromkeys([f"best_{c}" for c in UNIT_COLUMNS], math.nan)
        )
        rows.append(row)
    return frame(rows, BEST_LAST_COLUMNS)


def layer_grid(points: pd.DataFrame, dataset: str, split: str = tracking.TEST_ACC) -> pd.DataFrame:
    """Tables 3-4: accuracy per layer (rows) and model (columns) on one dataset."""
    sub = points[points["dataset"] == dataset]
    return sub.pivot_table(index="layer", columns="model", values=split, aggfunc="first").sort_index()


def last_k_table(data: ReportData) -> pd.DataFrame:
    """Figure 3's data: per dataset, model, aggregation (mean/max/min) and k, the validation-selected run.

    Each (dataset, model) is one ranking over its aggregations and k (``TIE_COLUMNS``).
    """
    rows = []
    singles = data.trials[data.trials["n_models"] == 1]
    for t in trial_candidates(data, singles, num_layers(data)).to_dict("records"):
        model = t["models"][0]
        found = last_k(t["layers"].get(model))
        if found is None:
            continue
        rows.append(
            {
                "dataset": t["dataset"],
                "model": model,
                "agg": found[0],
                "k": found[1],
                tracking.VAL_ACC: t[tracking.VAL_ACC],
                tracking.VAL_F1: t[tracking.VAL_F1],
                tracking.TEST_ACC: t[tracking.TEST_ACC],
                "trial": t["trial"],
                "run_id": t["run_id"],
                UNITS: t[UNITS],
                COST: t[COST],
            }
        )
    df = rank(frame(rows, (*LAST_K_COLUMNS, UNITS, COST))).drop_duplicates(["dataset", "model", "agg", "k"])
    stats = [unit_columns(data, run_id) for run_id in df["run_id"]]  # only the kept rows: one history read each
    df = df.assign(**{c: [s[c] for s in stats] for c in UNIT_COLUMNS}) if stats else df
    df = tie_groups(df, ["dataset", "model"], data.rule).drop(columns=[UNITS, COST])
    return df.sort_values(["dataset", "model", "agg", "k"]).reset_index(drop=True)


def last_k_best(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, model and aggregation, the validation-selected k (rows of ``last_k_table``)."""
    picked = rank(table).drop_duplicates(["dataset", "model", "agg"])
    return picked.sort_values(["dataset", "model", "agg"]).reset_index(drop=True)
