"""The TF-IDF baseline: every baseline trial ranked per dataset, its label and the one the rule picks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.common.ranking import tie_groups, trial_candidates
from benchmark.report.common.rows import CONFIG_COLUMNS, choose, config_row, frame

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

BASELINE_NAMES = {"svm": "linear SVM", "logreg": "logistic regression"}


def baseline_label(row: pd.Series | Any) -> str:
    """``TF-IDF 1-2 gram + linear SVM (C=1)``."""
    return f"TF-IDF 1-2 gram + {BASELINE_NAMES.get(row['classifier'], row['classifier'])} (C={row['C']:g})"


def baseline_grid(data: ReportData) -> pd.DataFrame:
    """Every finished baseline trial, best first per dataset by the selection rule, with ``chosen`` marking the top.

    The baseline trials of a dataset are one ranking: ``tied_with_best`` marks those tied with the top.
    """
    columns = (*CONFIG_COLUMNS, "classifier", "C", "chosen", "tied_with_best")
    base = data.baselines
    if base is None or base.empty:
        return frame([], columns)
    rows = []
    for _, group in base.groupby("dataset", sort=True):
        for _, r in tie_groups(trial_candidates(data, group, {}), ["dataset"], data.rule).iterrows():
            rows.append(
                {
                    **config_row(data, r),
                    "config": baseline_label(r),
                    "classifier": r["classifier"],
                    "C": float(r["C"]),
                    "chosen": bool(r["top"]),
                    "tied_with_best": bool(r["tied_with_best"]),
                }
            )
    return frame(rows, columns)


def best_baseline(data: ReportData, dataset: str) -> pd.Series | None:
    """The baseline trial the rule picks on ``dataset`` (None without baseline runs)."""
    base = data.baselines
    if base is None or base.empty:
        return None
    return choose(data, base[base["dataset"] == dataset])
