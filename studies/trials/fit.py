"""``fit_config``: train and score one configuration (models at layer specs, a fusion, head settings) on its units.

The plain, study-free path behind ``layerfuse fit``; reports print it as the command that reproduces a trial.
A unit is one (fold, seed) fit (``lightning_modules.folds``; the seeds of the single split without folds): every
unit trains in one batched model of the one engine (``fit_units``), the call study trials make, so a trial's
numbers come back.
``fit_tracked`` is the command's version: the same fits, logged as one MLflow run of kind ``fit`` with the
metric names a trial logs.
"""

from __future__ import annotations

from collections.abc import Mapping

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from benchmark.core.config import BenchConfig, to_yaml, with_values
from benchmark.core.run_inputs import cache_key_tags, log_inputs, training_inputs
from benchmark.core.stores import check_tracking
from benchmark.core.study_data import StudyData, resolve_data
from lightning_modules.callbacks import cuda_peak
from lightning_modules.datamodule import Selection
from lightning_modules.engine import run_logger
from lightning_modules.fit import check_fit, fit_units
from lightning_modules.folds import check_cv_folds, units
from lightning_modules.scores import FitResult
from studies.trials.objective import log_unit_results, trial_params
from studies.trials.presets import TrialPlan


def fit_config(
    cfg: BenchConfig, layers: Mapping[str, str], seeds: int = 1, run_id: str | None = None
) -> list[FitResult]:
    """Fit ``cfg.train`` on ``layers`` (model -> layer spec) of ``cfg.extract.dataset``, once per unit.

    Units are ``units(data.cv_folds, seeds)`` (index ``u = fold * seeds + seed``; seed k trains with
    ``train.seed + k``). They train as one batched model through ``fit_units``, the call a study trial makes, so a
    trial's numbers come back exactly. With ``run_id``, the learning curves go to that MLflow run.

    Raises:
        UserError: missing caches (with the extract command), bad layer specs or fusion, too many folds.
    """
    cfg = with_values(cfg, {"extract.models": tuple(layers)})
    return _fit(cfg, resolve_data(cfg, tuple(layers)), layers, seeds, run_id)


def _fit(
    cfg: BenchConfig, data: StudyData, layers: Mapping[str, str], seeds: int, run_id: str | None
) -> list[FitResult]:
    selections = [Selection.of(m, spec, data.dirs[m]) for m, spec in layers.items()]
    return fit_units(cfg, selections, units(cfg.data.cv_folds, seeds), logger=run_logger(cfg, run_id))


def fit_tracked(cfg: BenchConfig, layers: Mapping[str, str], seeds: int = 1) -> tuple[str, list[FitResult]]:
    """``fit_config``, logged as one run in experiment ``layerfuse/<dataset>`` (tag ``layerfuse.run_kind=fit``).

    The run holds the params a trial has (models, ``layer.<model>``, fusion, seeds, ``train.*``), what a trial
    logs of its units (``studies.trials.objective.log_unit_results``: mean scores and costs, ``val/acc_se``, per-unit
    histories, each unit's test predictions), ``config.yaml``, the true test labels, the dataset inputs and the
    cache keys; it ends FAILED with the error if a fit raises.

    Returns:
        The run id and the per-unit results.

    Raises:
        UserError: as ``fit_config`` (checked before any run is created).
    """
    check_tracking(cfg.tracking)
    cfg = with_values(cfg, {"extract.models": tuple(layers)})
    data = resolve_data(cfg, tuple(layers))
    dirs = data.dirs
    check_fit(cfg, [Selection.of(m, spec, dirs[m]) for m, spec in layers.items()])  # user errors before the run opens
    train = FeatureCache(dirs[next(iter(layers))].train)
    val_fraction = None if cfg.data.val_split else cfg.data.val_fraction
    check_cv_folds(train.labels(), cfg.data.cv_folds, cfg.data.cv_small_classes, train.label_names, val_fraction)
    mlc = tracking.client(cfg.tracking)
    experiment_id = tracking.ensure_experiment(mlc, tracking.experiment_name(cfg.extract.dataset), cfg.tracking)
    plan = TrialPlan(models=tuple(layers), layers=dict(layers), fusion=cfg.train.fusion)
    name = f"fit {'+'.join(f'{m}={spec}' for m, spec in layers.items())}"
    tags = cache_key_tags(cfg.paths.cache_dir, {m: dirs[m] for m in layers})
    with tracking.tracked_run(mlc, experiment_id, name[:250], tracking.KIND_FIT, cfg.tracking, tags) as run_id:
        params = trial_params(plan, data.name, tracking.KIND_FIT, seeds, cfg)
        tracking.log_run_data(mlc, run_id, params=params)
        tracking.log_text(mlc, run_id, to_yaml(cfg), tracking.CONFIG_ARTIFACT)
        log_inputs(mlc, run_id, training_inputs(data, cfg.data))
        tracking.log_array(mlc, run_id, data.test.labels, tracking.TEST_LABELS_ARTIFACT)
        with cuda_peak() as peak:
            results = _fit(cfg, data, layers, seeds, run_id)
        log_unit_results(mlc, run_id, results, peak)
    return run_id, results
