"""The report's first screen: per dataset, what to ship (``answer.table``), its accuracy, ties, cost and commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.common.labels import display
from benchmark.report.common.render import fmt, slug

if TYPE_CHECKING:
    from benchmark.report.common.render import Doc

MAX_TIED_NAMED = 3  # more tied configurations are counted, not named


def _accuracy_line(a: dict[str, Any]) -> str:
    what = (
        "refit on all training rows"
        if a["test_acc_source"] == "refit"
        else "of its validation folds' heads: not refit yet, export refits it first"
    )
    interval = (
        f", 95% interval [{fmt(a['ci_low'])}, {fmt(a['ci_high'])}] (Wilson, {a['test_rows']:,} test rows)"
        if a["test_rows"]
        else ""
    )
    return f"Test accuracy {fmt(a['test_acc'])} ({what}){interval}."


def _tied_line(a: dict[str, Any]) -> str:
    tied = a["tied"]
    if not tied:
        return "Tied with: none (no other configuration is within one standard error of it on validation)."
    named = "; ".join(f"{t['config']} ({t['study']} #{t['trial']})" for t in tied[:MAX_TIED_NAMED])
    more = f"; and {len(tied) - MAX_TIED_NAMED} more" if len(tied) > MAX_TIED_NAMED else ""
    return f"Tied with ({len(tied)}, within one standard error on validation): {named}{more}."


def _known(x: Any) -> bool:
    """Whether a number was measured: not NaN (a fresh answer) and not None (one read back from summary.json)."""
    return x is not None and x == x


def _cost_line(a: dict[str, Any]) -> str:
    c = a["cost"]
    parts = [f"{fmt(c['extract_ms_per_sample'], 2)} ms per text to embed"]
    if _known(c["head_ms_per_sample"]):
        parts.append(f"{fmt(c['head_ms_per_sample'], 3)} ms for the head")
    if _known(c["feature_mib"]) and _known(c["fused_dim"]):
        parts.append(f"{fmt(c['feature_mib'], 1)} MiB of training features (width {int(c['fused_dim'])})")
    sweep = " (every layer of the model at once: an upper bound)" if c["measured_in_sweep"] else ""
    return "Cost to run: " + ", ".join(parts) + f", as measured in the study{sweep}."


def answer_lines(a: dict[str, Any]) -> list[str]:
    """One answer (an ``answers`` entry) as plain sentences: what to ship, its accuracy, its ties, its cost."""
    head = f"{display(a['dataset'])}: ship {a['config']} ({a['study']}, trial {a['trial']})."
    return [head, _accuracy_line(a), _tied_line(a), _cost_line(a)]


def next_steps(a: dict[str, Any]) -> list[str]:
    """The commands that export an answer's configuration (refitting it first when needed) and use it."""
    name = f"{slug(display(a['dataset']))}-clf"
    return [a["export_command"], f"layerfuse predict --model models:/{name}@champion --input new.csv --out scored.csv"]


def answer_section(doc: Doc, found: list[dict[str, Any]]) -> None:
    """The answer block: what to ship per dataset and the commands that export and use it."""
    doc.heading("The answer")
    if not found:
        doc.para("No configuration to ship: these studies have no finished trials of a feature preset.")
        return
    for a in found:
        head, *rest = answer_lines(a)
        doc.para(f"**{head}**")
        doc.para(" ".join(rest))
        doc.para("Export it (refit on all training rows first when needed) and use it:")
        doc.code("\n".join(next_steps(a)))
