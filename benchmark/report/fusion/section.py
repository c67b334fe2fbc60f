"""Models together: fusion methods on model pairs (Table 2's two-model rows) and three or more models (Tables 5-6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.report.common.cells import add_figure, add_table, lexical_cell, mark_tied, tied_cell, vs_lexical_cell
from benchmark.report.common.labels import display
from benchmark.report.common.ranking import TIED_MARK
from benchmark.report.common.render import Bold, fmt, fmt_units
from benchmark.report.fusion.figure import fusion_methods
from studies.trials.presets import FUSION_METHODS

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc


CHOSEN_HEADERS = [
    "dataset",
    "pair",
    "fusion (val-selected)",
    "fusions finished / pruned",
    "fusions tied with best",
    "layers (val-selected)",
    "val acc",
    "test acc (test)",
    "test over units (test)",
    "best member (val-selected)",
    "member (test)",
    "gain vs member (test)",
    "TF-IDF (test)",
]


def fusion_section(doc: Doc, c: Computed, folder: Path, files: list[Path]) -> None:
    """The fusion figure, the fusion chosen per pair and every fusion's cell per dataset."""
    doc.heading("Fusion methods on model pairs (Table 2, Two Models rows)")
    if c.fusion.empty:
        doc.note("No two-model runs: run the `fusion-methods` preset to fill this section.")
        return
    singles = {p["dataset"]: p["single_test_acc"] for p in c.paired}
    add_figure(
        doc,
        fusion_methods(c.fusion, singles),
        folder,
        "fusion_comparison.png",
        "Test accuracy per model pair and fusion method at the layers chosen on validation; the frame marks the "
        "fusion chosen on validation for each pair; colour: gain over the validation-selected single model (test).",
        files,
    )
    doc.heading("Fusion chosen on validation per pair", 3)
    chosen, cut = c.fusion[c.fusion["chosen"]], c.pruned_fusion
    add_table(doc, CHOSEN_HEADERS, [_chosen_row(c, r) for _, r in chosen.iterrows()])
    with_row = set(zip(chosen["dataset"], chosen["pair"], strict=True))
    unfinished = sorted(set(zip(cut["dataset"], cut["pair"], strict=True)) - with_row)
    if unfinished:
        doc.note(
            "Pairs with every fusion pruned (no row above): "
            + "; ".join(f"{display(d)} {p}" for d, p in unfinished)
            + "."
        )
    for dataset in sorted(set(c.fusion["dataset"]) | set(cut["dataset"])):
        _fusion_grid(doc, c, dataset)
    doc.note(
        "Each cell: validation / test accuracy of that fusion at the layers chosen on validation; bold: the "
        f"fusion chosen on validation for the pair; {TIED_MARK}: another fusion tied with the pair's best; "
        "(preset): the cell's best trial came from another preset (e.g. search), with its own layers and head; "
        "pruned (x): every trial of the cell was cut by the pruner, x the validation accuracy it last reported (no "
        "test score); —: not run."
    )


def _chosen_row(c: Computed, r: pd.Series) -> list[str]:
    """One row of the chosen-fusion table (``CHOSEN_HEADERS``): the pair's chosen fusion, its tries and ties."""
    same = (c.fusion["dataset"] == r["dataset"]) & (c.fusion["pair"] == r["pair"])
    pruned = (c.pruned_fusion["dataset"] == r["dataset"]) & (c.pruned_fusion["pair"] == r["pair"])
    return [
        display(r["dataset"]),
        r["pair"],
        r["fusion"],
        f"{int(same.sum())} / {int(pruned.sum())}",
        ", ".join(c.fusion[same & c.fusion["tied_with_best"]]["fusion"]),
        r["layers_label"],
        fmt(r["val_acc"]),
        fmt(r["test_acc"]),
        fmt_units(r),
        r["best_member"],
        fmt(r["best_member_test_acc"]),
        fmt(r["gain_test_vs_member"], sign=True),
        lexical_cell(c, r["dataset"]),
    ]


def _fusion_grid(doc: Doc, c: Computed, dataset: str) -> None:
    """Every fusion (rows) on every pair (columns) of ``dataset``: finished cells, and pruned ones with their score."""
    sub, sub_cut = c.fusion[c.fusion["dataset"] == dataset], c.pruned_fusion[c.pruned_fusion["dataset"] == dataset]
    pairs = sorted(set(sub["pair"]) | set(sub_cut["pair"]))
    fusions = sorted(set(sub["fusion"]) | set(sub_cut["fusion"]))
    cells = {
        (r["fusion"], r["pair"]): f"pruned ({fmt(r['val_acc'])}){_other_preset(r['preset'])}"
        for _, r in sub_cut.iterrows()
    }
    for _, r in sub.iterrows():
        text = f"{fmt(r['val_acc'])} / {fmt(r['test_acc'])}{_other_preset(r['preset'])}"
        text = mark_tied(text, r["tied_with_best"] and not r["chosen"])
        cells[r["fusion"], r["pair"]] = Bold(text) if r["chosen"] else text
    doc.heading(f"Every fusion method on {display(dataset)}", 3)
    doc.table(
        ["fusion", *[f"{p} (val / test)" for p in pairs]],
        [[f, *[cells.get((f, p), "—") for p in pairs]] for f in fusions],
    )


def _other_preset(preset: str) -> str:
    """`` (search)`` for a fusion-grid cell filled by another preset's trial; nothing for the grid's own."""
    return "" if preset == FUSION_METHODS else f" ({preset})"


def multi_section(doc: Doc, c: Computed) -> None:
    """Tables 5-6: the fusion and layers chosen per dataset and set of three or more models."""
    doc.heading("Three or more models (Tables 5-6)")
    if c.multi.empty:
        doc.note("No runs with three or more models: run the `multi-model` preset to fill this section.")
        return
    multi = c.multi.sort_values(["dataset", "n_models", "models"])
    add_table(
        doc,
        [
            "dataset",
            "models",
            "model set",
            "fusion (val-selected)",
            "layers (val-selected)",
            "val acc",
            "test acc (test)",
            "test over units (test)",
            "TF-IDF (test)",
            "vs TF-IDF (test)",
            "tied with best",
        ],
        [
            [
                display(r["dataset"]),
                str(r["n_models"]),
                ", ".join(display(m) for m in r["models"].split(",")),
                r["fusion"],
                r["layers_label"],
                fmt(r["val_acc"]),
                fmt(r["test_acc"]),
                fmt_units(r),
                lexical_cell(c, r["dataset"]),
                vs_lexical_cell(c, r["dataset"], r["test_acc"]),
                tied_cell(r["tied_with_best"]) if (multi["dataset"] == r["dataset"]).sum() > 1 else "only set",
            ]
            for _, r in multi.iterrows()
        ],
    )
    doc.note(
        "One row per dataset and model set: the fusion method and layers chosen on validation for that set; tied "
        "with best: within one standard error of the dataset's best model set on validation."
    )
