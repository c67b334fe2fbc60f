"""The TF-IDF baseline's grid of classifiers and C, the one chosen on validation bold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.report.baseline.table import BASELINE_NAMES
from benchmark.report.common.cells import add_table, tied_cell
from benchmark.report.common.labels import display
from benchmark.report.common.render import Bold, fmt, fmt_units

if TYPE_CHECKING:
    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc


def baseline_section(doc: Doc, c: Computed) -> None:
    """The TF-IDF baseline's grid of classifiers and C, the chosen one bold."""
    doc.heading("Lexical baseline: TF-IDF word 1-2 grams")
    if c.baseline.empty:
        doc.note(
            "No baseline runs: run the `tfidf-baseline` preset on the same dataset to fill this section and the "
            "TF-IDF columns of every table."
        )
        return
    doc.note(
        "Fitted on the same train part and validated on the same rows as the neural heads; the classifier and "
        "C are chosen on validation (bold) and its test accuracy fills the TF-IDF column of every table."
    )
    add_table(
        doc,
        ["dataset", "classifier", "C", "val acc", "test acc (test)", "test over units (test)", "tied with best"],
        [
            [
                display(r["dataset"]),
                BASELINE_NAMES.get(r["classifier"], r["classifier"]),
                f"{r['C']:g}",
                (Bold if r["chosen"] else str)(fmt(r["val_acc"])),
                fmt(r["test_acc"]),
                fmt_units(r),
                tied_cell(r["tied_with_best"]),
            ]
            for _, r in c.baseline.iterrows()
        ],
    )
