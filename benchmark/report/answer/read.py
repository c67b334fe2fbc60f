"""Read a report folder's answer back from its ``summary.json`` (``layerfuse export --report``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.core.errors import UserError
from benchmark.report.summary import SUMMARY


def read_answer(report_dir: str | Path, dataset: str | None, tracking_uri: str) -> dict[str, Any]:
    """The answer a report folder's ``summary.json`` gives (for ``dataset`` when it covers several).

    Raises:
        UserError: no report there, a report without an answer, several datasets and none named (or an unknown
            one), or a report read from another tracking store than ``tracking_uri``.
    """
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
