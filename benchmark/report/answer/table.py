"""The report's answer: per dataset, the configuration to ship, its test accuracy, ties, cost and export command.

``answers`` computes it once (``summary.json``'s ``answer``, the quickstart's last lines, ``layerfuse export
--report``); ``answer.section`` lays it out. The test accuracy is the refit's (the model an export ships) where the
chosen trial has one, else its fold heads'; its 95% interval is Wilson's score interval over the test rows.
"""

from __future__ import annotations

import math
import shlex
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report.common.labels import display
from benchmark.report.common.render import slug
from studies.trials.presets import LAYER_SWEEP

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.runs import ReportData

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


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
