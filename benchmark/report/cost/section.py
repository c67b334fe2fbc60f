"""Cost (Sec. 5.4): the chosen run per number of models, the cost figures and the accuracy/memory Pareto front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.report.common.cells import add_figure, add_table, tied_cell
from benchmark.report.common.labels import display
from benchmark.report.common.render import fmt, fmt_units
from benchmark.report.cost.figure import acc_vs_cost, cost_vs_models
from benchmark.report.cost.table import costed

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc
    from benchmark.report.common.runs import ReportData


COST_HEADERS = [
    "dataset",
    "models",
    "best configuration (val-selected)",
    "val acc",
    "test acc (test)",
    "test over units (test)",
    "fused dim",
    "feature MiB",
    "extract ms/sample",
    "head ms/sample",
    "tied with best (all runs)",
]
PARETO_HEADERS = [
    "dataset",
    "configuration",
    "feature MiB",
    "extract ms/sample",
    "val acc",
    "test acc (test)",
    "test over units (test)",
    "tied with best (all runs)",
]


def cost_section(doc: Doc, c: Computed, data: ReportData, folder: Path, files: list[Path]) -> None:
    """Cost per number of models, the cost and accuracy/cost figures and the Pareto front."""
    doc.heading("Cost (Sec. 5.4) and accuracy vs cost")
    if c.cost.empty:
        doc.note("No run measured its cost (layer sweeps do not): run the `search` or `fusion-methods` preset.")
        return
    doc.note(
        "Runs that measured their cost; layer sweeps train every layer at once and are left out here. Tied with best "
        "(all runs): within one standard error of the dataset's best configuration over every finished run."
    )
    tied = set(c.overall.loc[c.overall["tied_with_best"].astype(bool), "run_id"])
    add_table(doc, COST_HEADERS, [_cost_row(r, tied) for _, r in c.cost.iterrows()])
    runs = costed(data)
    add_figure(
        doc,
        cost_vs_models(runs),
        folder,
        "cost_vs_models.png",
        "Fused dimension, feature memory, extraction and head time per sample vs number of models "
        "(every costed trial; lines join the medians).",
        files,
    )
    add_figure(
        doc,
        acc_vs_cost(runs, c.pareto),
        folder,
        "acc_vs_cost.png",
        "Accuracy vs feature memory: the Pareto front is chosen on validation (left) and shown with the same "
        "runs' test scores (right).",
        files,
    )
    doc.heading("Pareto front (validation accuracy vs feature memory)", 3)
    add_table(doc, PARETO_HEADERS, [_pareto_row(r, tied) for _, r in c.pareto.iterrows()])


def _cost_row(r: pd.Series, tied: set[str]) -> list[str]:
    """One row of the cost table (``COST_HEADERS``); ``tied``: the run ids tied with their dataset's best."""
    return [
        display(r["dataset"]),
        str(r["n_models"]),
        r["config"],
        fmt(r["val_acc"]),
        fmt(r["test_acc"]),
        fmt_units(r),
        fmt(r["fused_dim"], 0),
        fmt(r["feature_mib"], 2),
        fmt(r["extract_ms_per_sample"], 3),
        fmt(r["head_ms_per_sample"], 4),
        tied_cell(r["run_id"] in tied),
    ]


def _pareto_row(r: pd.Series, tied: set[str]) -> list[str]:
    """One row of the Pareto table (``PARETO_HEADERS``)."""
    return [
        display(r["dataset"]),
        r["config"],
        fmt(r["feature_mib"], 2),
        fmt(r["extract_ms_per_sample"], 3),
        fmt(r["val_acc"]),
        fmt(r["test_acc"]),
        fmt_units(r),
        tied_cell(r["run_id"] in tied),
    ]
