"""Models together: fusion methods on model pairs (Table 2's two-model rows) and three or more models (Tables 5-6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.figures.fusion import fusion_methods
from benchmark.report.render import Bold, fmt, fmt_units
from benchmark.report.sections.cells import add_figure, add_table, lexical_cell, mark_tied, tied_cell, vs_lexical_cell
from benchmark.report.selection import display
from benchmark.report.ties import TIED_MARK
from studies.trials.presets import FUSION_METHODS

if TYPE_CHECKING:
    from pathlib import Path

    from benchmark.report.render import Doc
    from benchmark.report.sections.computed import Computed


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

    def tied_fusions(dataset: Any, pair: str) -> str:
        rows = c.fusion[(c.fusion["dataset"] == dataset) & (c.fusion["pair"] == pair) & c.fusion["tied_with_best"]]
        return ", ".join(rows["fusion"])

    def tried(dataset: Any, pair: str) -> str:
        finished = (c.fusion["dataset"] == dataset) & (c.fusion["pair"] == pair)
        pruned = (cut["dataset"] == dataset) & (cut["pair"] == pair)
        return f"{int(finished.sum())} / {int(pruned.sum())}"

    add_table(
        doc,
        [
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
        ],
        [
            [
                display(r["dataset"]),
                r["pair"],
                r["fusion"],
                tried(r["dataset"], r["pair"]),
                tied_fusions(r["dataset"], r["pair"]),
                r["layers_label"],
                fmt(r["val_acc"]),
                fmt(r["test_acc"]),
                fmt_units(r),
                r["best_member"],
                fmt(r["best_member_test_acc"]),
                fmt(r["gain_test_vs_member"], sign=True),
                lexical_cell(c, r["dataset"]),
            ]
            for _, r in chosen.iterrows()
        ],
    )
    with_row = set(zip(chosen["dataset"], chosen["pair"], strict=True))
    unfinished = sorted(set(zip(cut["dataset"], cut["pair"], strict=True)) - with_row)
    if unfinished:
        doc.note(
            "Pairs with every fusion pruned (no row above): "
            + "; ".join(f"{display(d)} {p}" for d, p in unfinished)
            + "."
        )
    for dataset in sorted(set(c.fusion["dataset"]) | set(cut["dataset"])):
        sub, sub_cut = c.fusion[c.fusion["dataset"] == dataset], cut[cut["dataset"] == dataset]
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
    doc.note(
        "Each cell: validation / test accuracy of that fusion at the layers chosen on validation; bold: the "
        f"fusion chosen on validation for the pair; {TIED_MARK}: another fusion tied with the pair's best; "
        "(preset): the cell's best trial came from another preset (e.g. search), with its own layers and head; "
        "pruned (x): every trial of the cell was cut by the pruner, x the validation accuracy it last reported (no "
        "test score); —: not run."
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
