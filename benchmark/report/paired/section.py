"""The paired tests: best fusion vs best single model, and both against the TF-IDF baseline (``paired.table``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.common.labels import display
from benchmark.report.common.render import fmt

if TYPE_CHECKING:
    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc


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


PAIRED_HEADERS = [
    "dataset",
    "best fusion (val-selected)",
    "fusion (test)",
    "best single (val-selected)",
    "single (test)",
    "paired t-test over units (test)",
    "McNemar exact (test): only fusion right vs only single right",
    "refits on all train: fusion vs single, t-test and McNemar per seed (test)",
]
VERSUS_HEADERS = [
    "dataset",
    "which",
    "configuration (val-selected)",
    "test acc (test)",
    "TF-IDF (val-selected C)",
    "TF-IDF (test)",
    "paired t-test over units (test)",
    "McNemar exact (test): only model right vs only TF-IDF right",
    "refits on all train: model vs TF-IDF, t-test and McNemar per seed (test)",
]


def paired_section(doc: Doc, c: Computed) -> None:
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
    doc.table(PAIRED_HEADERS, rows)
    for p in c.paired:
        for note in p["notes"]:
            doc.note(f"{display(p['dataset'])}: {note}.")
    versus = [(p["dataset"], v) for p in c.paired for v in p["vs_baseline"]]
    if versus:
        doc.heading("Against the TF-IDF baseline (paired tests)", 3)
        doc.table(VERSUS_HEADERS, [_versus_row(d, v) for d, v in versus])


def _versus_row(dataset: str, v: dict[str, Any]) -> list[str]:
    """One row of the against-TF-IDF table (``VERSUS_HEADERS``)."""
    return [
        display(dataset),
        v["name"],
        v["config"],
        fmt(v["test_acc"]),
        v["baseline"],
        fmt(v["baseline_test_acc"]),
        _ttest(v["paired_t"]),
        _mcnemar_cell(v["mcnemar"], v["folds"]),
        _refit_cell(v["refit"]),
    ]
