"""The report's shift check: each dataset's train-vs-test check (``studies.choice.shift``) read off the parent runs.

``summary.json`` holds it under ``shift`` (per dataset: ``auc``, its interval, the per-fold AUCs, the layer read and
both splits' length distributions); a dataset above the threshold opens the report with a warning.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking

if TYPE_CHECKING:
    from benchmark.report.common.render import Doc
    from benchmark.report.common.runs import ReportData


def shift_checks(data: ReportData) -> dict[str, dict[str, Any]]:
    """Per dataset, the check of its first parent run that has one (every study of a dataset computes the same)."""
    out: dict[str, dict[str, Any]] = {}
    for row in data.parents.sort_values("run_id").to_dict("records"):
        if row["dataset"] in out:
            continue
        blob = data.artifact(row["run_id"], tracking.SHIFT_ARTIFACT)
        if blob is not None:
            out[row["dataset"]] = json.loads(blob)
    return out


def shift_warning(doc: Doc, checks: dict[str, dict[str, Any]]) -> None:
    """Open the report with a warning per flagged dataset: the gap, and what it means for every choice below."""
    for dataset, c in sorted(checks.items()):
        if not c.get("flagged"):
            continue
        train, test = c["lengths"]["train"], c["lengths"]["test"]
        doc.para(
            f"**Warning: on {dataset}, validation may not stand for test.** A classifier tells train texts from test "
            f"texts with ROC AUC {c['auc']:.3f} [{c['auc_low']:.3f}, {c['auc_high']:.3f}] (0.5: indistinguishable; "
            f"threshold {c['threshold']}; on {c['features']}, {c['rows']} rows per split); texts are "
            f"{train.get('median', 0):.0f} words long (median) in train and {test.get('median', 0):.0f} in test. Every "
            "validation score below is measured on rows of train, so the ranking, the tie sets and the chosen "
            "configuration answer which candidate is best on train-like texts; on test the order can differ by "
            "more than the standard errors say."
        )


def shift_note(checks: dict[str, dict[str, Any]]) -> str:
    """One sentence listing every dataset's check (the report's introduction)."""
    parts = [
        f"{d}: AUC {c['auc']:.3f}{' (flagged)' if c.get('flagged') else ''}"
        for d, c in sorted(checks.items())
        if c.get("auc") is not None
    ]
    return (
        "Train-vs-test shift check (adversarial validation on one cached layer, out-of-fold ROC AUC; "
        f"flagged above {next(iter(checks.values()))['threshold']}): {', '.join(parts)}."
        if parts
        else ""
    )
