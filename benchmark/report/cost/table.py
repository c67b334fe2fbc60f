"""Cost (Sec. 5.4): what the costed runs cost per number of models, and the accuracy vs feature-memory front."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.report.common.ranking import rank
from benchmark.report.common.rows import CONFIG_COLUMNS, choose, config_row, frame

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

COST_COLUMNS = ("fused_dim", "feature_mib", "extract_ms_per_sample", "head_ms_per_sample")
MIB = 2**20


def costed(data: ReportData) -> pd.DataFrame:
    """Trials that measured their cost (``perf/feature_bytes``), less layer sweeps.

    A sweep's costs are those of training every layer at once (all layers' bytes, every pass), not of its chosen
    layer alone, so beside single fits they would overstate a single model's cost L+1-fold.
    """
    t = data.trials
    return t[t[tracking.PERF_FEATURE_BYTES].notna() & t[tracking.VAL_ACC].notna() & (t["sweep_model"] == "")]


def cost_by_models(data: ReportData) -> pd.DataFrame:
    """Sec. 5.4: per dataset and number of models, the costed run the rule picks and what it costs."""
    rows = []
    for _, group in costed(data).groupby(["dataset", "n_models"], sort=True):
        chosen = choose(data, group)
        if chosen is not None:
            rows.append({**config_row(data, chosen), **costs(chosen), "trials": len(group)})
    return frame(rows, (*CONFIG_COLUMNS, *COST_COLUMNS, "trials"))


def costs(row: pd.Series) -> dict[str, float]:
    """What the run ``row`` cost (``COST_COLUMNS``): fused dimension, feature MiB, extraction and head ms/sample."""
    return {
        "fused_dim": float(row[tracking.PERF_FUSED_DIM]),
        "feature_mib": float(row[tracking.PERF_FEATURE_BYTES]) / MIB,
        "extract_ms_per_sample": float(row[tracking.PERF_EXTRACT_MS_PER_SAMPLE]),
        "head_ms_per_sample": float(row[tracking.PERF_HEAD_MS_PER_SAMPLE]),
    }


def pareto(data: ReportData) -> pd.DataFrame:
    """Per dataset, the runs no other run beats on both validation accuracy and feature memory (cheapest first)."""
    rows = []
    for _, group in costed(data).groupby("dataset", sort=True):
        ordered = rank(group).sort_values(tracking.PERF_FEATURE_BYTES, kind="stable")  # cheapest first, best val first
        top = -math.inf
        for _, row in ordered.iterrows():
            if row[tracking.VAL_ACC] > top:
                top = float(row[tracking.VAL_ACC])
                rows.append({**config_row(data, row), **costs(row)})
    return frame(rows, (*CONFIG_COLUMNS, *COST_COLUMNS))
