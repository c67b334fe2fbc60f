"""The report's first screen: per dataset, the configuration to ship, its test accuracy, ties, cost and export command.

``answers`` computes it once (``summary.json``'s ``answer``, the quickstart's last lines, ``layerfuse export
--report``), ``answer_section`` lays it out. The test accuracy is the refit's (the model an export ships) where the
chosen trial has one, else its fold heads'; its 95% interval is Wilson's score interval over the test rows.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.errors import UserError
from benchmark.report.render import fmt, slug
from benchmark.report.selection import display
from studies.trials.presets import LAYER_SWEEP

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.render import Doc
    from benchmark.report.runs import ReportData
    from benchmark.report.sections.computed import Computed

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
MAX_TIED_NAMED = 3  # more tied configurations are counted, not named


def wilson(acc: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy ``acc`` measured on ``n`` rows (NaNs without rows).

    Written out rather than scipy's ``binomtest(k, n).proportion_ci(method="wilson")``, which needs a whole number
    of correct rows: a refit's accuracy is a mean over seeds.
    """
    if not n or math.isnan(acc):
        return math.nan, math.nan
    z2 = Z95**2
    center = (acc + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(acc * (1 - acc) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return center - half, center + half


def _test_rows(data: ReportData, study: str) -> int:
    """The number of test rows of ``study``: the length of the true test labels on its parent run (0 if absent)."""
    parents = data.parents[data.parents["study"] == study]["run_id"]
    labels = data.array(str(parents.iloc[0]), tracking.TEST_LABELS_ARTIFACT) if len(parents) else None
    return 0 if labels is None else len(labels)


def export_command(report_dir: Path | str, dataset: str, several: bool) -> str:
    """The one command that exports a report's choice for ``dataset`` and registers it as ``<dataset>-clf``."""
    which = ["--dataset", dataset] if several else []
    name = f"{slug(display(dataset))}-clf"
    return shlex.join(["layerfuse", "export", "--report", str(report_dir), *which, "--name", name])


def _cost(row: pd.Series) -> dict[str, Any]:
    return {
        "extract_ms_per_sample": row["extract_ms_per_sample"],
        "head_ms_per_sample": row["head_ms_per_sample"],
        "feature_mib": row["feature_mib"],
        "fused_dim": row["fused_dim"],
        "measured_in_sweep": row["preset"] == LAYER_SWEEP,  # every layer at once: an upper bound of the one chosen
    }


def answers(data: ReportData, c: Computed, report_dir: Path | str) -> list[dict[str, Any]]:
    """Per dataset, the chosen configuration as the report's answer (see module doc)."""
    out = []
    several = c.best["dataset"].nunique() > 1
    for _, r in c.best.iterrows():
        dataset = str(r["dataset"])
        refit = bool(r["refit_run_id"])
        acc = float(r["refit_test_acc"] if refit else r["test_acc"])
        n = _test_rows(data, str(r["study"]))
        low, high = wilson(acc, n)
        tied = c.tied[(c.tied["dataset"] == r["dataset"]) & ~c.tied["picked"].astype(bool)]
        out.append(
            {
                "dataset": dataset,
                "config": r["config"],
                "study": r["study"],
                "trial": int(r["trial"]),
                "run_id": r["run_id"],
                "refit_run_id": r["refit_run_id"],
                "test_acc": acc,
                "test_acc_source": "refit" if refit else "fold heads",
                "test_rows": n,
                "ci_low": low,
                "ci_high": high,
                "tied": [
                    {"config": t["config"], "study": t["study"], "trial": int(t["trial"])} for _, t in tied.iterrows()
                ],
                "cost": _cost(r),
                "export_command": export_command(report_dir, dataset, several),
            }
        )
    return out


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


def read_answer(report_dir: str | Path, dataset: str | None, tracking_uri: str) -> dict[str, Any]:
    """The answer a report folder's ``summary.json`` gives (for ``dataset`` when it covers several).

    Raises:
        UserError: no report there, a report without an answer, several datasets and none named (or an unknown
            one), or a report read from another tracking store than ``tracking_uri``.
    """
    from benchmark.report.export import SUMMARY

    path = Path(report_dir) / SUMMARY
    if not path.is_file():
        raise UserError(f"--report {report_dir}: no {SUMMARY} there; name a folder `layerfuse report` wrote")
    summary = json.loads(path.read_text())
    found = {a["dataset"]: a for a in summary.get("answer", [])}
    if not found:
        raise UserError(
            f"--report {report_dir} names no configuration to ship (a report from before answers, or of the TF-IDF "
            "baseline alone): write it again with `layerfuse report ... --force`, or export with --study NAME"
        )
    if dataset is None and len(found) > 1:
        raise UserError(f"--report {report_dir} answers for {len(found)} datasets: add --dataset {'|'.join(found)}")
    if dataset is not None and dataset not in found:
        raise UserError(f"--dataset {dataset!r}: the report at {report_dir} answers for {', '.join(found)}")
    if summary.get("tracking_uri") != tracking_uri:
        raise UserError(
            f"--report {report_dir} was read from tracking store {summary.get('tracking_uri')}, not "
            f"{tracking_uri}: add --set tracking.uri={summary.get('tracking_uri')}"
        )
    return dict(found[dataset if dataset is not None else next(iter(found))])
