"""``fit_config``: train and score one configuration (models at layer specs, a fusion, head settings) over seeds.

The plain, study-free path behind ``layerfuse fit``; reports print it as the command that reproduces a trial.
``fit_tracked`` is the command's version: the same fits, logged as one MLflow run of kind ``fit``.
"""

from __future__ import annotations

from collections.abc import Mapping

from benchmark.core import tracking
from benchmark.core.config import BenchConfig, to_yaml, with_values
from benchmark.core.keys import load_text_split
from benchmark.core.run_inputs import log_inputs
from benchmark.core.stores import check_tracking
from benchmark.core.text_data import dataset_label
from lightning_modules.train import FitResult, check_fit, fit_and_evaluate
from studies.caches import resolve_dirs
from studies.inputs import cache_key_tags, training_inputs
from studies.objective import seed_mean_metrics, trial_params
from studies.presets import TrialPlan


def fit_config(cfg: BenchConfig, layers: Mapping[str, str], seeds: int = 1) -> list[FitResult]:
    """Fit ``cfg.train`` on ``layers`` (model -> layer spec) of ``cfg.extract.dataset``, once per seed.

    Seed k trains with ``train.seed + k``, as study trials do, so a trial's numbers come back exactly.

    Raises:
        UserError: missing caches (with the extract command), bad layer specs or fusion.
    """
    cfg = with_values(cfg, {"extract.models": tuple(layers)})
    dirs = resolve_dirs(cfg)
    selections = [dirs[m].selection(m, spec) for m, spec in layers.items()]
    return [fit_and_evaluate(with_values(cfg, {"train.seed": cfg.train.seed + k}), selections) for k in range(seeds)]


def fit_tracked(cfg: BenchConfig, layers: Mapping[str, str], seeds: int = 1) -> tuple[str, list[FitResult]]:
    """``fit_config``, logged as one run in experiment ``layerfuse/<dataset>`` (tag ``layerfuse.run_kind=fit``).

    The run holds the params a trial has (models, ``layer.<model>``, fusion, seeds, ``train.*``), the mean scores
    and costs over seeds with per-seed histories, ``config.yaml``, the test predictions of each seed and the true
    test labels, the dataset inputs and the cache keys; it ends FAILED with the error if a fit raises.

    Returns:
        The run id and the per-seed results.

    Raises:
        UserError: as ``fit_config`` (checked before any run is created).
    """
    check_tracking(cfg.tracking)
    cfg = with_values(cfg, {"extract.models": tuple(layers)})
    dirs = resolve_dirs(cfg)
    check_fit(cfg, [dirs[m].selection(m, spec) for m, spec in layers.items()])  # user errors before the run opens
    mlc = tracking.client(cfg.tracking)
    experiment_id = tracking.ensure_experiment(mlc, tracking.experiment_name(cfg.extract.dataset), cfg.tracking)
    plan = TrialPlan(models=tuple(layers), layers=dict(layers), fusion=cfg.train.fusion)
    name = f"fit {'+'.join(f'{m}={spec}' for m, spec in layers.items())}"
    tags = cache_key_tags(cfg, {m: dirs[m].train for m in layers})
    with tracking.tracked_run(mlc, experiment_id, name[:250], tracking.KIND_FIT, cfg.tracking, tags) as run_id:
        params = trial_params(plan, dataset_label(cfg.extract.dataset), tracking.KIND_FIT, seeds, cfg)
        tracking.log_run_data(mlc, run_id, params=params)
        tracking.log_text(mlc, run_id, to_yaml(cfg), tracking.CONFIG_ARTIFACT)
        log_inputs(mlc, run_id, training_inputs(cfg))
        tracking.log_array(mlc, run_id, load_text_split(cfg, "test").labels, tracking.TEST_LABELS_ARTIFACT)
        results = fit_config(cfg, layers, seeds)
        for k, r in enumerate(results):
            tracking.log_array(mlc, run_id, r.test_pred, tracking.PRED_ARTIFACT.format(seed=k))
        tracking.log_run_data(
            mlc,
            run_id,
            metrics=seed_mean_metrics(results),
            histories={
                tracking.SEED_HISTORIES[0]: [r.val_acc for r in results],
                tracking.SEED_HISTORIES[1]: [r.test_acc for r in results],
            },
        )
    return run_id, results
