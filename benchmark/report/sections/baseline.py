"""The TF-IDF baseline's grid and the paired tests (best fusion vs best single model, both vs TF-IDF)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.render import Bold, fmt, fmt_units
from benchmark.report.sections.cells import add_table, tied_cell
from benchmark.report.selection import display
from benchmark.report.tables.baseline import BASELINE_NAMES

if TYPE_CHECKING:
    from benchmark.report.render import Doc
    from benchmark.report.sections.computed import Computed


def _ttest(t: dict[str, Any] | None) -> str:
    return f"Δ={fmt(t['mean_diff'], sign=True)}, t={fmt(t['t'], 2)}, p={fmt(t['p_value'])} (n={t['n']})" if t else "—"


def _refit_cell(refit: dict[str, Any] | None) -> str:
    """The refits' test accuracies, paired t-test and McNemar per seed, or a dash without both refits."""
    if refit is None:
        return "—"
    tests = [_ttest(refit["paired_t"]), _mcnemar_cell(refit["mcnemar"], 1)]
    return f"{fmt(refit['a_test_acc'])} vs {fmt(refit['b_test_acc'])}; " + "; ".join(t for t in tests if t != "—")


def _mcnemar_cell(tests: list[dict[str, Any]], folds: int) -> str:
    """One ``unit: only a vs only b, p`` entry per common unit (its fold named where there are folds)."""
    cells = []
    for m in tests:
        unit = f"fold {m['fold']} seed {m['seed']}" if folds > 1 else f"seed {m['seed']}"
        cells.append(f"{unit}: {m['only_a']} vs {m['only_b']}, p={fmt(m['p_value'])}")
    return "; ".join(cells) or "—"


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


def stats_section(doc: Doc, c: Computed) -> None:
    """Paired tests: best fusion vs best single model, and both against the TF-IDF baseline."""
    doc.heading("Best fusion vs best single model (paired tests)")
    if not c.paired:
        doc.note("Needs both single-model and multi-model runs on a dataset.")
        return
    rows = [
        [
            display(p["dataset"]),
            p["fusion"],
            fmt(p["fusion_test_acc"]),
            p["single"],
            fmt(p["single_test_acc"]),
            _ttest(p["paired_t"]),
            _mcnemar_cell(p["mcnemar"], p["folds"]),
            _refit_cell(p["refit"]),
        ]
        for p in c.paired
    ]
    doc.table(
        [
            "dataset",
            "best fusion (val-selected)",
            "fusion (test)",
            "best single (val-selected)",
            "single (test)",
            "paired t-test over units (test)",
            "McNemar exact (test): only fusion right vs only single right",
            "refits on all train: fusion vs single, t-test and McNemar per seed (test)",
        ],
        rows,
    )
    for p in c.paired:
        for note in p["notes"]:
            doc.note(f"{display(p['dataset'])}: {note}.")
    versus = [(p["dataset"], v) for p in c.paired for v in p["vs_baseline"]]
    if versus:
        doc.heading("Against the TF-IDF baseline (paired tests)", 3)
        doc.table(
            [
                "dataset",
                "which",
                "configuration (val-selected)",
                "test acc (test)",
                "TF-IDF (val-selected C)",
                "TF-IDF (test)",
                "paired t-test over units (test)",
                "McNemar exact (test): only model right vs only TF-IDF right",
                "refits on all train: model vs TF-IDF, t-test and McNemar per seed (test)",
            ],
            [
                [
                    display(d),
                    v["name"],
                    v["config"],
                    fmt(v["test_acc"]),
                    v["baseline"],
                    fmt(v["baseline_test_acc"]),
                    _ttest(v["paired_t"]),
                    _mcnemar_cell(v["mcnemar"], v["folds"]),
                    _refit_cell(v["refit"]),
                ]
                for d, v in versus
            ],
        )
