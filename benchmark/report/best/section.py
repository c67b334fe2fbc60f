"""The chosen configuration per dataset, the configurations tied with it, its selection regret and re-training."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.report.common.cells import add_table, lexical_cell, vs_lexical_cell
from benchmark.report.common.labels import display
from benchmark.report.common.render import Bold, fmt, fmt_units

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc


BEST_HEADERS = [
    "dataset",
    "configuration",
    "study",
    "trial",
    "val acc",
    "test acc (test)",
    "test over units (test)",
    "TF-IDF (test)",
    "vs TF-IDF (test)",
    "refit on all train (test)",
    "TF-IDF refit (test)",
    "refit vs TF-IDF refit (test)",
]
TIED_HEADERS = [
    "dataset",
    "configuration",
    "study",
    "trial",
    "val acc",
    "val SE",
    "diff SE",
    "units",
    "GFLOPs/text",
    "ms/text",
    "test acc (test)",
]


def best_section(doc: Doc, c: Computed) -> None:
    """The chosen configuration per dataset, the configurations tied with it, the regret, re-train commands."""
    doc.heading("Best configuration found (validation-selected)")
    if c.best.empty:
        doc.note("No trials of the neural presets: only the TF-IDF baseline below.")
        return
    add_table(doc, BEST_HEADERS, [_best_row(c, r) for _, r in c.best.iterrows()])
    doc.note(
        "test acc: the mean of the heads fit on the validation folds' training rows (the scores the choice was made "
        "beside). The study's result is the refit: the chosen configuration trained again on all training rows, "
        "per seed, for the median best epoch of its fits (`layerfuse refit`), and the TF-IDF baseline refit the same "
        "way. A dash: no refit of that trial yet (`layerfuse refit --study STUDY --trial N`)."
    )
    doc.heading("Configurations tied with the best (validation)", 3)
    doc.note(
        f"Every configuration within one standard error of each dataset's best on validation ({len(c.tied)} in all), "
        "with its test accuracy: the spread the single choice above hides. Bold: the one the rule chose. diff SE: "
        "the standard error of its difference to the best (the tie criterion); GFLOPs/text: the computed forward "
        "cost of what its exported model runs (one-se picks the lowest); ms/text: measured (extraction of the whole "
        "model plus head)."
    )
    add_table(doc, TIED_HEADERS, [_tied_row(r) for _, r in c.tied.iterrows()])
    _regret_section(doc, c)
    for dataset, cmd in c.commands.items():
        doc.para(
            f"Re-train the best {display(dataset)} configuration on its units (its folds and seeds; from the "
            "repository root, where the study ran):"
        )
        doc.code(cmd)


def _best_row(c: Computed, r: pd.Series) -> list[str]:
    """One row of the chosen-configuration table (``BEST_HEADERS``)."""
    return [
        display(r["dataset"]),
        r["config"],
        r["study"],
        str(r["trial"]),
        fmt(r["val_acc"]),
        Bold(fmt(r["test_acc"])),
        fmt_units(r),
        lexical_cell(c, r["dataset"]),
        vs_lexical_cell(c, r["dataset"], r["test_acc"]),
        Bold(fmt(r["refit_test_acc"])) if r["refit_run_id"] else "—",
        fmt(r["baseline_refit_test_acc"]),
        fmt(r["refit_test_acc"] - r["baseline_refit_test_acc"], sign=True),
    ]


def _tied_row(r: pd.Series) -> list[str]:
    """One row of the tied-configurations table (``TIED_HEADERS``), the rule's choice bold."""
    return [
        display(r["dataset"]),
        (Bold if r["picked"] else str)(r["config"]),
        r["study"],
        str(r["trial"]),
        fmt(r["val_acc"]),
        fmt(r["val_acc_se"]),
        fmt(r["diff_se"]),
        str(int(r["n_units"])),
        fmt(r["gflops_per_text"], 3),
        fmt(r["infer_ms_per_text"], 2),
        fmt(r["test_acc"]),
    ]


def _regret_section(doc: Doc, c: Computed) -> None:
    if c.regret.empty:
        return
    doc.heading("Selection regret (test, a diagnostic)", 3)
    doc.note(
        "What the validation choice cost: its test accuracy minus the best test accuracy among every candidate "
        "scored on the dataset (every trial and every swept layer, all as fold heads), and whether it beats the "
        "chosen TF-IDF baseline and the chosen single model by at least 0.5 points (basis: their refits on all "
        "training rows where both have one, else the fold heads). Test never made a choice."
    )
    add_table(
        doc,
        [
            "dataset",
            "rule",
            "chosen (test)",
            "best on test (test)",
            "regret (test)",
            "candidates",
            "vs TF-IDF (test)",
            "vs best single model (test)",
            "basis",
        ],
        [
            [
                display(r["dataset"]),
                r["rule"],
                f"{r['chosen']}: {fmt(r['chosen_test_acc'])}",
                f"{r['best_test_config']}: {fmt(r['best_test_acc'])}",
                fmt(r["regret"], sign=True),
                str(int(r["candidates"])),
                _versus_cell(r["vs_baseline"], r["beats_baseline"], r["baseline_run_id"], "no TF-IDF baseline ran"),
                _versus_cell(
                    r["vs_single"], r["beats_single"], r["single_run_id"], "no single-model trial", r["single_config"]
                ),
                r["basis"],
            ]
            for _, r in c.regret.iterrows()
        ],
    )


def _versus_cell(gain: float, beats: bool, other_run: str, missing: str, other: str = "") -> str:
    """The chosen configuration's gain over another (``other_run``), or what is missing when there is none."""
    if not other_run:
        return f"— ({missing})"
    versus = f" vs {other}" if other else ""
    return f"{fmt(gain, sign=True)}{versus} ({'beats' if beats else 'does not beat'})"
