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
from benchmark.core.tracking import EXPERIMENT_PREFIX
from benchmark.report.answer.table import answers
from benchmark.report.common.render import slug, to_html, to_markdown
from benchmark.report.common.runs import load_runs
from benchmark.report.compute import compute
from benchmark.report.layout import build
from benchmark.report.summary import SUMMARY, plain, summary_of

if TYPE_CHECKING:
    from benchmark.core.config import BenchConfig
    from benchmark.report.common.computed import Computed
    from benchmark.report.common.runs import ReportData

log = logging.getLogger(__name__)

FORMATS = ("md", "html")
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


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise UserError(f"report format '{fmt}' is not known.{suggest(fmt, list(FORMATS))} Use md, html or md,html")
    return tuple(dict.fromkeys(formats))


def _name(studies: Sequence[str], experiments: Sequence[str]) -> str:
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


def _out_folder(
    cfg: BenchConfig, studies: Sequence[str], experiments: Sequence[str], out_dir: str | Path | None
) -> Path:
    """The report folder: ``out_dir``, else ``<report.out_dir>/<names>``; its path checked before anything is read."""
    out = Path(out_dir) if out_dir is not None else Path(cfg.report.out_dir) / _name(studies, experiments)
    check_folder_path(out, "--out" if out_dir is not None else "report.out_dir")
    return out


def _fresh_tmp(out: Path) -> Path:
    """An empty ``.<name>.tmp-<pid>`` folder beside ``out``, after removing those of reports killed while writing."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    remove_stale(out.parent, ".*.tmp-*")  # folders of reports killed while writing (their process is gone)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _write_files(
    data: ReportData, c: Computed, tmp: Path, title: str, answer: list[dict[str, Any]], formats: Sequence[str]
) -> list[str]:
    """Lay the report out into ``tmp``: its PNGs, the document in each format and the CSV; return their names."""
    doc, pngs = build(data, c, tmp, title, answer)
    files = [p.name for p in pngs]
    if "md" in formats:
        (tmp / "report.md").write_text(to_markdown(doc))
        files.append("report.md")
    if "html" in formats:
        (tmp / "report.html").write_text(to_html(doc, tmp))
        files.append("report.html")
    c.best_last.to_csv(tmp / CSV, index=False, float_format="%.10g")
    return files


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


def _publish(data: ReportData, cfg: BenchConfig, tmp: Path, out: Path, summary: dict[str, Any]) -> tuple[str, bool]:
    """Write ``summary.json``, move ``tmp`` into place as ``out`` and log it (unless unchanged); (run id, fresh)."""
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
    return run_id, fresh


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
    studies, experiments = list(dict.fromkeys(studies)), list(dict.fromkeys(experiments))
    formats = _check_formats(formats)
    out = _out_folder(cfg, studies, experiments, out_dir)
    check_tracking(cfg.tracking, must_exist=True)  # a report only reads: never create an empty store
    data = load_runs(cfg, studies, experiments)
    _prepare(out, force)
    computed = compute(data)
    title = _title(data, studies, experiments)
    parents = sorted(set(data.parents["run_id"]))
    tmp = _fresh_tmp(out)
    answer = answers(data, computed, out)
    try:
        files = _write_files(data, computed, tmp, title, answer, formats)
        summary = summary_of(data, computed, studies, experiments, title, cfg.tracking.uri)
        summary.update(answer=plain(answer), files=sorted([*files, CSV, SUMMARY]), parent_runs=parents)
        run_id, fresh = _publish(data, cfg, tmp, out, summary)
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
