"""Single layers and last-k aggregation: Figures 2-3, best vs last layer (Table 2) and the layer grids (Tables 3-4)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.report.common.cells import add_figure, add_table, lexical_cell, mark_tied, tied_cell
from benchmark.report.common.labels import display
from benchmark.report.common.ranking import TIED_MARK
from benchmark.report.common.render import Bold, fmt, fmt_units, slug
from benchmark.report.common.style import FROM_TRIALS
from benchmark.report.layers.figure import acc_by_layer, last_k_curves
from benchmark.report.layers.table import last_k_best, layer_grid

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc


BEST_LAST_HEADERS = [
    "dataset",
    "model",
    "source",
    "last layer",
    "last val",
    "last test (test)",
    "best layer (val-selected)",
    "best val",
    "best test (test)",
    "gain val",
    "gain (test)",
    "best over units (test)",
    "best val SE",
    "layers tied with best",
    "last tied with best",
    "TF-IDF (test)",
]


def layer_section(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    """Figure 2 per model, best vs last layer (Table 2) and the layer grids per dataset (Tables 3-4)."""
    doc.heading("Accuracy by layer (Figure 2)")
    if c.points.empty:
        doc.note("No single-layer runs: run the `layer-sweep` preset to fill this section.")
        return
    doc.note(
        "Single layers of single models, from layer-sweep runs (same head settings for every layer); a model "
        f"without a sweep shows its single-layer trials instead (column source; diamonds {FROM_TRIALS})."
    )
    _layer_figures(doc, c, folder, files)
    doc.heading("Best layer vs last layer (Table 2, Specific Layer rows)", 3)
    add_table(doc, BEST_LAST_HEADERS, [_best_last_row(c, r) for _, r in c.best_last.iterrows()])
    for dataset in sorted(c.points["dataset"].unique()):
        _layer_grid(doc, c, dataset)


def _layer_figures(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    """Figure 2 for every model scored at two layers or more, and a note naming the others."""
    layers = c.points.groupby(["model", "dataset"])["layer"].nunique().groupby(level="model").max()
    flat = sorted(str(m) for m, n in layers.items() if n < 2)
    for model in sorted(m for m in c.points["model"].unique() if m not in flat):
        rows = c.best_last[c.best_last["model"] == model]
        add_figure(
            doc,
            acc_by_layer(c.points[c.points["model"] == model], rows, display(model)),
            folder,
            f"acc_by_layer_{slug(display(model))}.png",
            f"Accuracy by layer for {display(model)}: validation "
            "(solid) and test (dashed); stars mark the layer chosen on validation (large: its validation, small: its "
            "test accuracy), the dotted line the last layer.",
            files,
        )
    if flat:
        doc.note(
            f"No accuracy-by-layer figure for {', '.join(display(m) for m in flat)}: a single layer was scored "
            "(e.g. TF-IDF, a one-layer feature); its numbers are in the tables below."
        )


def _best_last_row(c: Computed, r: pd.Series) -> list[str]:
    """One row of the best-vs-last table (``BEST_LAST_HEADERS``)."""
    return [
        display(r["dataset"]),
        display(r["model"]),
        r["source"],
        fmt(r["last_layer"], 0),
        fmt(r["last_val_acc"]),
        fmt(r["last_test_acc"]),
        Bold(str(r["best_layer"])),
        fmt(r["best_val_acc"]),
        fmt(r["best_test_acc"]),
        fmt(r["gain_val"], sign=True),
        Bold(fmt(r["gain_test"], sign=True)),
        fmt_units(r, "best_"),
        fmt(r["val_acc_se"]),
        r["tied_layers"],
        tied_cell(r["tied_with_best"]) if r["last_layer"] is not None else "—",
        lexical_cell(c, r["dataset"]),
    ]


def _grids(points: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Validation, test and (a raced sweep's) probe accuracy of ``dataset`` on the same layers (rows) and models."""
    val, test = layer_grid(points, dataset, tracking.VAL_ACC), layer_grid(points, dataset)
    probe = layer_grid(points, dataset, tracking.SWEEP_PROBE_ACC) if tracking.SWEEP_PROBE_ACC in points else None
    layers, models = val.index.union(test.index), val.columns.union(test.columns)
    if probe is not None:  # a raced sweep's stopped layers have a probe score only
        layers, models = layers.union(probe.index), models.union(probe.columns)
        probe = probe.reindex(index=layers, columns=models)
    return val.reindex(index=layers, columns=models), test.reindex(index=layers, columns=models), probe


def _layer_grid(doc: Doc, c: Computed, dataset: str) -> None:
    """Tables 3-4 for one dataset: validation / test accuracy per layer and model, the chosen layer bold."""
    val, test, probe = _grids(c.points, dataset)
    chosen = {r["model"]: r["best_layer"] for _, r in c.best_last[c.best_last["dataset"] == dataset].iterrows()}
    sub = c.points[c.points["dataset"] == dataset]
    sub = sub[sub["tied_with_best"].astype(bool)]
    tied = set(zip(sub["layer"], sub["model"], strict=True))
    doc.heading(f"Layer-wise accuracy on {display(dataset)} (Tables 3-4)", 3)
    doc.note(
        "Each cell: validation / test accuracy of that single layer; bold = the layer chosen on validation; "
        f"{TIED_MARK} = another layer tied with the model's best"
        + (
            "; stopped (probe x): a layer the probe or the race stopped before it trained on every unit "
            "(`study.race`), x its ridge probe's validation accuracy."
            if probe is not None and probe.notna().to_numpy().any()
            else "."
        )
    )

    def cell(layer: int, m: str, v: float) -> str:
        if probe is not None and math.isnan(val.at[layer, m]) and not math.isnan(probe.at[layer, m]):
            return stopped_cell(probe.at[layer, m])
        text = mark_tied(f"{fmt(val.at[layer, m])} / {fmt(v)}", (layer, m) in tied and chosen.get(m) != layer)
        return (Bold if chosen.get(m) == layer else str)(text)

    doc.table(
        ["layer", *[f"{display(str(m))} (val / test)" for m in val.columns]],
        [[str(layer), *[cell(layer, m, v) for m, v in row.items()]] for layer, row in test.iterrows()],
    )


def stopped_cell(probe: float) -> str:
    """A layer-grid cell of a layer the probe or the race stopped: its probe accuracy."""
    return f"stopped (probe {probe:.4f})"


def last_k_section(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    """Figure 3 per model and the validation-selected k per dataset, model and aggregation."""
    doc.heading("Last-k layer aggregation (Figure 3)")
    if c.last_k.empty:
        doc.note("No last-k runs: run the `last-k` preset to fill this section.")
        return
    ks = c.last_k.groupby("model")["k"].nunique()
    flat = sorted(str(m) for m, n in ks.items() if n < 2)
    for model in sorted(m for m in c.last_k["model"].unique() if m not in flat):
        sub = c.last_k[c.last_k["model"] == model]
        add_figure(
            doc,
            last_k_curves(sub, c.best_last[c.best_last["model"] == model], display(model)),
            folder,
            f"last_k_{slug(display(model))}.png",
            f"Mean/max/min of the last k layers of {display(model)}: "
            "validation (left), test (right); reference lines: the last layer alone and the validation-selected "
            "single layer.",
            files,
        )
    if flat:
        doc.note(f"No last-k figure for {', '.join(display(m) for m in flat)}: only k = 1 was scored (one layer).")
    best = last_k_best(c.last_k)
    top = set(c.last_k.loc[c.last_k["picked"].astype(bool), "run_id"])
    add_table(
        doc,
        [
            "dataset",
            "model",
            "aggregation",
            "k (val-selected)",
            "k tried",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "TF-IDF (test)",
            "tied with best",
        ],
        [
            [
                display(r["dataset"]),
                display(r["model"]),
                r["agg"],
                str(r["k"]),
                _k_range(c.last_k, r),
                (Bold if r["run_id"] in top else str)(fmt(r[tracking.VAL_ACC])),
                fmt(r[tracking.TEST_ACC]),
                fmt_units(r),
                lexical_cell(c, r["dataset"]),
                tied_cell(r["tied_with_best"]),
            ]
            for _, r in best.iterrows()
        ],
    )
    doc.note(
        "One row per aggregation: the k chosen on validation among those scored (every k is in the figure and "
        "in summary.json); bold: the aggregation and k chosen on validation for each model and dataset; tied with "
        "best: within one standard error of the model's best aggregation and k."
    )


def _k_range(table: pd.DataFrame, r: pd.Series) -> str:
    ks = table[(table["dataset"] == r["dataset"]) & (table["model"] == r["model"]) & (table["agg"] == r["agg"])]["k"]
    return f"{int(ks.min())}..{int(ks.max())}" if ks.nunique() > 1 else str(int(ks.min()))
