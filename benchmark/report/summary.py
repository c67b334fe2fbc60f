"""``summary.json``: every table of a report as plain JSON, with the tie set of every ranking the report made."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.report.common.labels import config_label
from benchmark.report.common.ranking import tie_sets
from benchmark.report.shift import shift_checks
from studies.choice.selection import RULE_TEXT, SELECTION_RULE

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.runs import ReportData

SUMMARY = "summary.json"


def plain(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python, tuples -> lists, floats to 10 digits, recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else None  # 0.03, not 0.030000000000000027
    return value


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as JSON-safe dicts (``plain``)."""
    return [plain(r) for r in df.to_dict("records")]


def tie_sets_of(data: ReportData, c: Computed) -> list[dict[str, Any]]:
    """``summary.json``'s ``tie_sets``: per ranking the report made, the rule, the best, the choice and the tied."""
    return [
        *tie_sets(c.points, "layer", ["dataset", "model"], lambda r: str(int(r["layer"])), data.rule),
        *tie_sets(c.last_k, "last_k", ["dataset", "model"], lambda r: f"{r['agg']}:last{r['k']}", data.rule),
        *tie_sets(c.fusion, "fusion", ["dataset", "pair"], lambda r: str(r["fusion"]), data.rule),
        *tie_sets(c.multi, "model_set", ["dataset"], lambda r: str(r["models"]), data.rule),
        *tie_sets(c.overall, "overall", ["dataset"], config_label, data.rule),
    ]


def summary_of(
    data: ReportData, c: Computed, studies: Sequence[str], experiments: Sequence[str], title: str, uri: str
) -> dict[str, Any]:
    """``summary.json`` less the answer, the files and the report's run (``write_report`` adds those)."""
    best = records(c.best)
    for row in best:
        row["command"] = c.commands.get(row["dataset"], "")
    summary: dict[str, Any] = plain(
        {
            "title": title,
            "studies": sorted(data.counts),
            "requested_studies": list(studies),
            "requested_experiments": list(experiments),
            "tracking_uri": uri,
            "selection_rule": SELECTION_RULE,
            "rule": data.rule,
            "rule_text": RULE_TEXT[data.rule],
            "tie_sets": tie_sets_of(data, c),
            "tied_configs": records(c.tied),
            "shift": shift_checks(data),
            "selection_regret": records(c.regret),
            "trial_counts": data.counts,
            "finished_trials": len(data.trials),
            "num_layers": c.depth,
            "best": best,
            "best_layers": records(c.best_last),
            "last_k": records(c.last_k),
            "fusion_comparison": records(c.fusion),
            "fusion_pruned": records(c.pruned_fusion),
            "multi_model": records(c.multi),
            "cost": records(c.cost),
            "pareto": records(c.pareto),
            "paired_tests": c.paired,
            "baseline": records(c.baseline),
        }
    )
    return summary
