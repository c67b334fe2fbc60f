"""``build``: the report's sections in reading order: the answer, then the method in brief, then the evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.answer.section import answer_section
from benchmark.report.baseline.section import baseline_section
from benchmark.report.best.section import best_section
from benchmark.report.common.labels import display
from benchmark.report.common.ranking import TIED_MARK, UNIT_NOTE, units_summary
from benchmark.report.common.render import Doc
from benchmark.report.cost.section import cost_section
from benchmark.report.fusion.section import fusion_section, multi_section
from benchmark.report.layers.section import last_k_section, layer_section
from benchmark.report.paired.section import paired_section
from benchmark.report.shift import shift_checks, shift_note, shift_warning
from studies.choice.selection import RULE_TEXT, SELECTION_RULE

if TYPE_CHECKING:
    from pathlib import Path

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.runs import ReportData


def _intro(doc: Doc, data: ReportData) -> None:
    t, base = data.trials, data.baselines
    datasets = sorted({display(d) for d in (*t["dataset"], *(() if base is None else base["dataset"]))})
    lexical = f" (+{len(base)} TF-IDF baseline)" if base is not None and len(base) else ""
    doc.heading("How it was chosen")
    doc.para(
        f"Studies: {', '.join(sorted(data.counts))}. Datasets: {', '.join(datasets)}. "
        f"Finished trials: {len(t)}{lexical}."
    )
    doc.note(
        f"Chosen by selection.rule = {data.rule} ({RULE_TEXT[data.rule]}) on validation: the held-out part of train, "
        "or each fold of it with data.cv_folds. Test never made a choice; columns marked (test) score the chosen "
        f"configuration. Tied: within one standard error of the best, of the paired per-unit differences (yes, or "
        f"{TIED_MARK} in a grid). Over units: ± the sample std, [..] a 95% bootstrap interval of the mean."
    )
    doc.note(f"{SELECTION_RULE[0].upper()}{SELECTION_RULE[1:]}. {UNIT_NOTE}")


def build(
    data: ReportData, c: Computed, folder: Path, title: str, answers: list[dict[str, Any]]
) -> tuple[Doc, list[Path]]:
    """Lay out the report, writing each figure as a PNG into ``folder``; return the document and the PNG paths.

    ``answers``: ``answer.table.answers``, the first screen.
    """
    doc = Doc(title)
    files: list[Path] = []
    checks = shift_checks(data)
    shift_warning(doc, checks)  # before the answer: it qualifies every choice below
    answer_section(doc, answers)
    _intro(doc, data)
    if note := shift_note(checks):
        doc.note(note)
    doc.note(units_summary(c.overall, c.points))
    best_section(doc, c)
    baseline_section(doc, c)
    layer_section(doc, c, folder, files)
    last_k_section(doc, c, folder, files)
    fusion_section(doc, c, folder, files)
    multi_section(doc, c)
    paired_section(doc, c)
    cost_section(doc, c, data, folder, files)
    states = sorted({s for v in data.counts.values() for s in v})
    doc.heading("Trials per study")
    doc.table(
        ["study", *states], [[study, *[str(v.get(s, 0)) for s in states]] for study, v in sorted(data.counts.items())]
    )
    return doc, files
