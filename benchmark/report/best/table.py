"""The overall ranking of every finished trial, the configuration chosen per dataset (with refits) and its ties."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.report.baseline.table import best_baseline
from benchmark.report.common.labels import num_layers
from benchmark.report.common.ranking import COST, TIE_COLUMNS, UNITS, tie_groups, trial_candidates
from benchmark.report.common.rows import CONFIG_COLUMNS, config_row, frame
from benchmark.report.cost.table import COST_COLUMNS, costs

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData


def overall(data: ReportData) -> pd.DataFrame:
    """Every finished trial of each dataset as one ranking (``TIE_COLUMNS``), best first.

    The overall pick is the ``picked`` row of each dataset.
    """
    ranked = tie_groups(trial_candidates(data, data.trials, num_layers(data)), ["dataset"], data.rule)
    return ranked.drop(columns=[UNITS, COST]).reset_index(drop=True)


REFIT_COLUMNS = ("refit_test_acc", "refit_run_id", "baseline_refit_test_acc")


def refit_of(data: ReportData, run_id: str) -> tuple[float, str]:
    """Test accuracy (mean over seeds) and run of ``run_id``'s refit on all training rows; NaN and "" without one."""
    refit = data.refits.get(run_id)
    return (math.nan, "") if refit is None else (float(refit["test_acc"]), str(refit["run_id"]))


def best_configs(data: ReportData, ranked: pd.DataFrame | None = None) -> pd.DataFrame:
    """The configuration ``selection.rule`` picks per dataset over every finished trial (``ranked``: ``overall``).

    With the refit of that trial on all training rows (the study's result) and of the dataset's chosen baseline.
    """
    ranked = overall(data) if ranked is None else ranked
    rows = []
    for _, r in ranked[ranked["picked"].astype(bool)].iterrows():
        acc, run = refit_of(data, r["run_id"])
        base = best_baseline(data, str(r["dataset"]))
        refit = {
            "refit_test_acc": acc,
            "refit_run_id": run,
            "baseline_refit_test_acc": math.nan if base is None else refit_of(data, base["run_id"])[0],
        }
        rows.append({**config_row(data, r), **costs(r), **{c: r[c] for c in TIE_COLUMNS}, **refit})
    return frame(rows, (*CONFIG_COLUMNS, *COST_COLUMNS, *TIE_COLUMNS, *REFIT_COLUMNS))


def tied_configs(data: ReportData, ranked: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, every configuration tied with the best (``ranked``: ``overall``), with its test scores."""
    rows = [
        {**config_row(data, r), **{c: r[c] for c in TIE_COLUMNS}, **{k: r.get(m, math.nan) for k, m in COSTS.items()}}
        for _, r in ranked[ranked["tied_with_best"].astype(bool)].iterrows()
    ]
    return frame(rows, (*CONFIG_COLUMNS, *TIE_COLUMNS, *COSTS))


# what a tied configuration costs to run (``studies.trials.flops``; measured ms where the run has them)
COSTS = {"gflops_per_text": tracking.PERF_INFER_GFLOPS, "infer_ms_per_text": tracking.PERF_INFER_MS}
