"""``write_report``: read studies from MLflow, write the report folder atomically, log it as a run of its own.

The folder is built as ``.<name>.tmp-<pid>`` beside the target and moved into place at the end, so a failed
report never leaves a half-written folder, and ``force`` only ever replaces an earlier report folder.

On MLflow, each report is one run (tag ``layerfuse.run_kind=report``) holding its files, tagged with the studies it
covers (``layerfuse.report_studies``) and its content hash (``layerfuse.report_digest``); it sits in the studies'
experiment, or in ``layerfuse/reports`` when they span several. Each study parent run it covers names it in its
tag ``layerfuse.report_run_id``. An unchanged re-report (same hash) reuses its run instead of adding one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.errors import UserError
from benchmark.core.faults import remove_stale
from benchmark.core.registry import suggest
from benchmark.core.stores import check_folder_path, check_tracking

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.core.config import BenchConfig
    from benchmark.report.runs import ReportData
    from benchmark.report.sections.computed import Computed

log = logging.getLogger(__name__)

FORMATS = ("md", "html")
SUMMARY = "summary.json"
CSV = "best_layers.csv"
HASH_CHARS = 10
MAX_TITLE_NAMES = 4  # longer lists are summarised in the title (the intro lists every study)
MAX_NAME = 80  # folder and artifact names stay far below file-system limits (255 bytes)
MAX_TAG_CHARS = 8000  # MLflow's longest tag value; summary.json lists every study in any case


@dataclass
class ReportResult:
    """What ``write_report`` produced.

    Attributes:
        out_dir: The report folder.
        files: Every file written into it.
        summary: The content of ``summary.json``.
        parent_runs: Ids of the study parent runs the report covers (their ``layerfuse.report_run_id`` names it).
        run_id: The report's own MLflow run, holding the files.
    """

    out_dir: Path
    files: list[Path]
    summary: dict[str, Any]
    parent_runs: list[str] = field(default_factory=list)
    run_id: str = ""


def _plain(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python, tuples -> lists, floats to 10 digits, recursively."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else None  # 0.03, not 0.030000000000000027
    return value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [_plain(r) for r in df.to_dict("records")]


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise UserError(f"report format '{fmt}' is not known.{suggest(fmt, list(FORMATS))} Use md, html or md,html")
    return tuple(dict.fromkeys(formats))


def _name(studies: Sequence[str], experiments: Sequence[str]) -> str:
    from benchmark.core.tracking import EXPERIMENT_PREFIX
    from benchmark.report.render import slug

    names = [*studies, *(e.removeprefix(EXPERIMENT_PREFIX) for e in experiments)]
    if not names:
        return "report"
    joined = "+".join(names)
    text = slug(joined)
    if text == joined and len(text) <= MAX_NAME:
        return text
    # The slug dropped or replaced characters ("ü" and "é" both become "x") or is cut: a hash of the exact names
    # keeps the folder one-to-one with what it reports, so one study's --force never replaces another's report.
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]
    return f"{text[: MAX_NAME - 9]}-{digest}"


def _title(data: ReportData, studies: Sequence[str], experiments: Sequence[str]) -> str:
    names = [*studies, *experiments]
    if len(names) <= MAX_TITLE_NAMES:
        return "layerfuse report: " + ", ".join(names)
    presets = ", ".join(sorted(set(data.parents["preset"]) - {""}))
    return (
        f"layerfuse report: {data.parents['study'].nunique()} studies ({presets}) "
        f"on {', '.join(sorted(set(data.parents['dataset'])))}"
    )


def _prepare(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not force:
        raise UserError(f"report folder {out} already exists: pass --force to replace it, or choose another --out")
    if not out.is_dir() or (any(out.iterdir()) and not (out / SUMMARY).is_file()):
        raise UserError(
            f"{out} exists and is not a layerfuse report folder (no {SUMMARY}); refusing to replace it "
            "even with --force: choose another --out"
        )


def _summary(
    data: ReportData, c: Computed, studies: Sequence[str], experiments: Sequence[str], title: str, uri: str
) -> dict[str, Any]:
    from benchmark.report.selection import SELECTION_RULE, config_label
    from benchmark.report.shift import shift_checks
    from benchmark.report.ties import rule_text, tie_sets

    best = _records(c.best)
    for row in best:
        row["command"] = c.commands.get(row["dataset"], "")
    summary: dict[str, Any] = _plain(
        {
            "title": title,
            "studies": sorted(data.counts),
            "requested_studies": list(studies),
            "requested_experiments": list(experiments),
            "tracking_uri": uri,
            "selection_rule": SELECTION_RULE,
            "rule": data.rule,
            "rule_text": rule_text(data.rule),
            "tie_sets": [
                *tie_sets(c.points, "layer", ["dataset", "model"], lambda r: str(int(r["layer"])), data.rule),
                *tie_sets(c.last_k, "last_k", ["dataset", "model"], lambda r: f"{r['agg']}:last{r['k']}", data.rule),
                *tie_sets(c.fusion, "fusion", ["dataset", "pair"], lambda r: str(r["fusion"]), data.rule),
                *tie_sets(c.multi, "model_set", ["dataset"], lambda r: str(r["models"]), data.rule),
                *tie_sets(c.overall, "overall", ["dataset"], config_label, data.rule),
            ],
            "tied_configs": _records(c.tied),
            "shift": shift_checks(data),
            "selection_regret": _records(c.regret),
            "trial_counts": data.counts,
            "finished_trials": len(data.trials),
            "num_layers": c.depth,
            "best": best,
            "best_layers": _records(c.best_last),
            "last_k": _records(c.last_k),
            "fusion_comparison": _records(c.fusion),
            "fusion_pruned": _records(c.pruned_fusion),
            "multi_model": _records(c.multi),
            "cost": _records(c.cost),
            "pareto": _records(c.pareto),
            "paired_tests": c.paired,
            "baseline": _records(c.baseline),
        }
    )
    return summary


@contextmanager
def _report_run(data: ReportData, cfg: BenchConfig, name: str, digest: str) -> Iterator[tuple[str, bool]]:
    """The run of this report: an earlier run of the same content, or a fresh one; yields (run id, fresh)."""
    experiments = sorted(set(data.parents["experiment_id"]))
    mlc = data.mlc
    experiment_id = (
        experiments[0]
        if len(experiments) == 1
        else tracking.ensure_experiment(mlc, tracking.REPORTS_EXPERIMENT, cfg.tracking)
    )
    same = mlc.search_runs(
        [experiment_id],
        f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_REPORT}' and tags.`{tracking.TAG_REPORT_DIGEST}` = '{digest}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if same:
        yield same[0].info.run_id, False
        return
    studies = ",".join(sorted(set(data.parents["study"])))
    tags = {tracking.TAG_REPORT_STUDIES: studies[:MAX_TAG_CHARS], tracking.TAG_REPORT_DIGEST: digest}
    with tracking.tracked_run(mlc, experiment_id, name, tracking.KIND_REPORT, cfg.tracking, tags) as run_id:
        yield run_id, True


def write_report(
    cfg: BenchConfig,
    studies: Sequence[str] = (),
    experiments: Sequence[str] = (),
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    force: bool = False,
) -> ReportResult:
    """Export the paper's figures and tables for the named studies and/or experiments.

    Args:
        cfg: Config; ``tracking`` names the MLflow store, ``report.out_dir`` the default parent folder.
        studies: Study names (the ``layerfuse.study`` tag of a parent run).
        experiments: Experiment names (``layerfuse/<dataset>`` or ``<dataset>``); every study in them is included.
        out_dir: Report folder; default ``<report.out_dir>/<study or experiment names joined by +>``.
        formats: Any of ``md`` and ``html`` (CSV, JSON and PNGs are always written).
        force: Replace an existing report folder.

    Returns:
        The folder, its files, the summary, the parent runs covered and the report's own run.

    Raises:
        UserError: bad format, nothing named, unknown study/experiment, no finished trials, or an existing folder
            (checked in this order, so a misspelt study is reported as such even when its folder exists).
    """
    from benchmark.report.render import to_html, to_markdown
    from benchmark.report.runs import load_runs
    from benchmark.report.sections.answer import answers
    from benchmark.report.sections.computed import compute
    from benchmark.report.sections.layout import build

    studies, experiments = list(dict.fromkeys(studies)), list(dict.fromkeys(experiments))
    formats = _check_formats(formats)
    name = _name(studies, experiments)
    out = Path(out_dir) if out_dir is not None else Path(cfg.report.out_dir) / name
    check_folder_path(out, "--out" if out_dir is not None else "report.out_dir")
    check_tracking(cfg.tracking, must_exist=True)  # a report only reads: never create an empty store
    data = load_runs(cfg, studies, experiments)
    _prepare(out, force)
    computed = compute(data)
    title = _title(data, studies, experiments)
    parents = sorted(set(data.parents["run_id"]))
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    remove_stale(out.parent, ".*.tmp-*")  # folders of reports killed while writing (their process is gone)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    answer = answers(data, computed, out)
    try:
        doc, pngs = build(data, computed, tmp, title, answer)
        files = [p.name for p in pngs]
        if "md" in formats:
            (tmp / "report.md").write_text(to_markdown(doc))
            files.append("report.md")
        if "html" in formats:
            (tmp / "report.html").write_text(to_html(doc, tmp))
            files.append("report.html")
        computed.best_last.to_csv(tmp / CSV, index=False, float_format="%.10g")
        summary = _summary(data, computed, studies, experiments, title, cfg.tracking.uri)
        summary.update(answer=_plain(answer), files=sorted([*files, CSV, SUMMARY]), parent_runs=parents)
        digest = hashlib.sha256(json.dumps(summary, sort_keys=True, allow_nan=False).encode()).hexdigest()
        # the run is named as its folder (e.g. quickstart), not as the studies it covers
        with _report_run(data, cfg, out.name, digest[:HASH_CHARS]) as (run_id, fresh):
            summary["report_run_id"] = run_id
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
            if fresh:
                data.mlc.log_artifacts(run_id, str(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for parent in parents:  # after the upload: the tag never names a run without its files
        data.mlc.set_tag(parent, tracking.TAG_REPORT_RUN, run_id)
    log.info(
        "report: wrote %d files to %s, %s run %s (covering %d study parent run(s))",
        len(summary["files"]),
        out,
        "logged them as" if fresh else "unchanged since",
        run_id,
        len(parents),
    )
    return ReportResult(out, [out / f for f in summary["files"]], summary, parents, run_id)
