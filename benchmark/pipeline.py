"""``run_pipeline(cfg)``: each dataset of ``pipeline.datasets`` through extraction and each preset, then one report.

This is ``layerfuse reproduce`` (the paper's experiment families, Sec. 3.1-3.4, plus the TF-IDF baseline) and
``layerfuse quickstart`` (the same pipeline with fewer stages). Every stage is resumable on its own (the feature
cache skips finished chunks, studies resume from their storage), so rerunning an interrupted pipeline redoes
nothing that finished. Stage wall times, summed over the sittings of a resumed run (``benchmark.stage_times``), are
returned and written into the report folder as ``stages.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.core.config import BenchConfig, with_values
from benchmark.core.keys import load_text_split
from benchmark.core.models import resolve_model
from benchmark.core.stores import check_storage_url, check_tracking
from benchmark.stage_times import REPORT_STAGE, STAGES_FILE, Stage, StageJournal, write_stages
from lightning_modules.folds import check_cv_folds
from studies.trials.presets import PRESETS

if TYPE_CHECKING:
    from benchmark.report import ReportResult
    from studies.run.runner import StudyOutcome

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """Studies run (in order), stage timings (over every sitting of the run), and the report over all of them."""

    studies: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    outcomes: list[StudyOutcome] = field(default_factory=list)
    report: ReportResult | None = None


def skip_reason(cfg: BenchConfig, preset_name: str) -> str:
    """Why ``preset_name`` cannot run with the configured models ("" when it can)."""
    preset = PRESETS.get(preset_name)
    if not preset.needs_features:
        return ""
    if len(cfg.extract.models) < preset.min_models:
        return f"needs {preset.min_models} models, {len(cfg.extract.models)} given"
    return ""


def _outcome_line(out: StudyOutcome) -> str:
    best = f"; best val {out.best_value:.4f}" if out.best_value is not None else ""
    test = f", test {out.best_test_acc:.4f}" if out.best_test_acc is not None else ""
    refit = f", refit test {out.result_test_acc:.4f}" if out.result_test_acc is not None else ""
    return f"{out.name}: {out.complete} complete, {out.pruned} pruned, {out.failed} failed{best}{test}{refit}"


def run_pipeline(cfg: BenchConfig, on_stage: Callable[[Stage], None] | None = None) -> PipelineResult:
    """Run extraction, then each of ``pipeline.presets``, on each of ``pipeline.datasets``; report on all studies.

    Args:
        cfg: The base config; ``extract.dataset`` and ``study.preset`` are set per stage.
        on_stage: Called after each stage with this sitting's time in it (the CLI prints it).

    Raises:
        UserError: unknown dataset, model or preset (checked before any work starts), or any stage's own errors.
    """
    from benchmark.report import write_report
    from extractors.run import extract_all
    from studies.run.runner import run_study, study_name

    _check(cfg)
    result = PipelineResult()
    out_dir = Path(cfg.report.out_dir) / cfg.pipeline.report_name
    journal = StageJournal(out_dir.with_name(f"{out_dir.name}.{STAGES_FILE}"), _plan(cfg))

    def stage(dataset: str, name: str) -> AbstractContextManager[list[str]]:
        return journal.timed(dataset, name, on_stage)

    for dataset in cfg.pipeline.datasets:
        dcfg = with_values(cfg, {"extract.dataset": dataset})
        with stage(dataset, "extract") as outcome:
            summaries = extract_all(dcfg, track=True)
            new = [s for s in summaries if not s.cached]
            outcome.append(f"{len(summaries) - len(new)} cached, {len(new)} extracted")
        for preset in cfg.pipeline.presets:
            reason = skip_reason(dcfg, preset)
            if reason:
                log.info("%s %s: skipped (%s)", dataset, preset, reason)
                continue
            scfg = with_values(dcfg, {"study.preset": preset})
            with stage(dataset, preset) as outcome:
                study = run_study(scfg)
                result.outcomes.append(study)
                result.studies.append(study_name(scfg))
                outcome.append(_outcome_line(study))
    with stage(",".join(cfg.pipeline.datasets), REPORT_STAGE) as outcome:
        report = write_report(cfg, studies=result.studies, out_dir=out_dir, formats=cfg.report.formats, force=True)
        result.report = report
        outcome.append(f"{len(report.files)} files in {out_dir}")
    result.stages = journal.stages
    write_stages(result.stages, out_dir / STAGES_FILE)
    # The report run holds it too; logged after the run closed, as the report stage's time includes the logging.
    tracking.client(cfg.tracking).log_artifact(report.run_id, str(out_dir / STAGES_FILE))
    return result


def _check(cfg: BenchConfig) -> None:
    """Refuse a bad preset, model, store or fold setting now, not after hours of extraction."""
    for name in cfg.pipeline.presets:
        PRESETS.get(name)
    for model in cfg.extract.models:
        resolve_model(model, cfg.paths.models_dir)
    check_storage_url(cfg.study.storage)
    check_tracking(cfg.tracking)
    for dataset in cfg.pipeline.datasets:  # folds a dataset's classes cannot fill
        train = load_text_split(with_values(cfg, {"extract.dataset": dataset}), "train")
        val_fraction = None if cfg.data.val_split else cfg.data.val_fraction
        check_cv_folds(train.labels, cfg.data.cv_folds, cfg.data.cv_small_classes, train.label_names, val_fraction)


def _plan(cfg: BenchConfig) -> set[tuple[str, str]]:
    """The (dataset, stage) pairs a run of ``cfg`` may time."""
    stages = ("extract", *cfg.pipeline.presets)
    return {(d, s) for d in cfg.pipeline.datasets for s in stages} | {(",".join(cfg.pipeline.datasets), REPORT_STAGE)}
