"""The study objective: plan a trial, train and score it (over ``study.seeds`` seeds), track it in MLflow.

Every trial gets exactly one nested MLflow run, created before planning so that trials pruned for an invalid
combination are tracked too; the run's id is stored in the trial's ``mlflow_run_id`` user attribute, the
Optuna params are logged verbatim as ``optuna.<name>`` once planned, and the run ends FINISHED (COMPLETE, or
PRUNED with the ``val/acc`` values reported until then as its history) or FAILED (FAIL, with the
error in tag ``layerfuse.error``) with tag ``optuna.trial_state``. Errors are not caught: a trial that raises
fails and stops its worker (the runner retries it on the next run); only CUDA running out of memory prunes
the trial, with a logged reason.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from benchmark.core.config import BenchConfig, to_yaml, with_values
from benchmark.core.faults import caused_by_interrupt
from benchmark.core.run_inputs import cache_key_tags, log_inputs
from benchmark.core.study_data import StudyData
from lightning_modules.callbacks import cuda_peak, max_peak, peak_rss_mb, time_inference, torch_threads
from lightning_modules.components.net import FusionNet
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.engine import CURVES, LAYERS_MEAN, run_logger, unit_curve
from lightning_modules.fit import fit_units
from lightning_modules.folds import mean_se, units
from studies.choice.val_record import sweep_records, trial_records
from studies.trials.baseline import fit_baseline_units
from studies.trials.best_layers import unit_matrix
from studies.trials.presets import LAST_K, Preset, StudyContext, TrialPlan
from studies.trials.racing import log_screen, probe_verdict
from studies.trials.sweep_store import unit_sweep

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

INTERRUPTED_ATTR = "interrupted"  # a trial's user attribute: stopped by Ctrl-C, SIGTERM or its command's death


@dataclass
class StudyRuns:
    """Where a study's trials are tracked."""

    mlc: MlflowClient
    experiment_id: str
    parent_run_id: str
    study_name: str
    preset: str
    inputs: Sequence[DatasetInput] = ()  # the train/validation/test sets, logged on every trial run


def trial_params(plan: TrialPlan, dataset: str, preset: str, seeds: int, cfg: BenchConfig) -> dict[str, Any]:
    """The stable MLflow params of a planned trial (see ``benchmark.core.tracking``)."""
    params: dict[str, Any] = {
        "preset": preset,
        "dataset": dataset,
        "models": ",".join(plan.models),
        "n_models": len(plan.models),
        "fusion": plan.fusion,
        "seeds": seeds,
    }
    params.update({f"layer.{m}": spec for m, spec in plan.layers.items()})
    if plan.baseline is not None:  # no neural head: its settings would only mislead
        return {**params, **{f"baseline.{k}": v for k, v in plan.baseline.items()}}
    params.update(
        {
            f"train.{k}": v
            for k, v in tracking.flatten(
                {
                    "lr": cfg.train.lr,
                    "hidden_dims": cfg.train.hidden_dims,
                    "dropout": cfg.train.dropout,
                    "weight_decay": cfg.train.weight_decay,
                    "proj_dim": cfg.train.proj_dim,
                    "batch_size": cfg.train.batch_size,
                    "max_epochs": cfg.train.max_epochs,
                    "patience": cfg.train.patience,
                    "monitor": cfg.train.monitor,
                }
            ).items()
        }
    )
    return params


def finish_run(runs: StudyRuns, run_id: str, state: str, reason: str = "") -> None:
    """Close a trial's run with its Optuna state and why it was pruned or failed (tags prune reason / error)."""
    tags = {tracking.TAG_STATE: state}
    if reason:
        tags[tracking.TAG_PRUNE_REASON if state == "PRUNED" else tracking.TAG_ERROR] = reason[:5000]
    tracking.log_run_data(runs.mlc, run_id, tags=tags)
    # A pruned trial is a finished run (its Optuna state is in the tag), not a user abort (KILLED).
    runs.mlc.set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")


def create_trial_run(runs: StudyRuns, number: int) -> str:
    """Create trial ``number``'s nested run, tagged with its study and number from the start; returns its id.

    The tags make the run findable before the trial records its id (``mlflow_run_id``): a worker killed in
    between leaves a RUNNING run that ``studies.run.orphans.close_orphan_runs`` closes on the next run.
    """
    run = runs.mlc.create_run(
        runs.experiment_id,
        run_name=f"{runs.study_name}#{number}",
        tags={
            tracking.TAG_PARENT: runs.parent_run_id,
            tracking.TAG_STUDY: runs.study_name,
            tracking.TAG_KIND: tracking.KIND_TRIAL,
            tracking.TAG_PRESET: runs.preset,
            tracking.TAG_TRIAL: str(number),
            tracking.TAG_STATE: "RUNNING",
            **tracking.version_tags(),
        },
    )
    return str(run.info.run_id)


class Objective:
    """Callable for ``study.optimize``.

    Args:
        cfg: Base config (dataset, training defaults, seeds, pruning).
        preset: The study preset.
        ctx: Models, layer counts and best layers.
        data: The dataset's splits and each model's cache directories (``benchmark.core.study_data``).
        runs: MLflow destination.
    """

    def __init__(self, cfg: BenchConfig, preset: Preset, ctx: StudyContext, data: StudyData, runs: StudyRuns) -> None:
        self.cfg, self.preset, self.ctx, self.data, self.runs = cfg, preset, ctx, data, runs

    def __call__(self, trial: optuna.Trial) -> float:
        """Run one trial in its own MLflow run; return its mean validation accuracy."""
        run_id = create_trial_run(self.runs, trial.number)
        trial.set_user_attr("mlflow_run_id", run_id)
        log_inputs(self.runs.mlc, run_id, self.runs.inputs)
        try:
            value = self._run(trial, run_id)
        except optuna.TrialPruned as err:
            self._pruned(trial, run_id, str(err))
            raise
        except torch.cuda.OutOfMemoryError as err:
            # The one error that says "this configuration does not fit", not "the code is wrong".
            reason = f"CUDA out of memory: {err}".splitlines()[0]
            log.warning("trial %d pruned: %s", trial.number, reason)
            trial.set_user_attr("prune_reason", reason)
            self._pruned(trial, run_id, reason)
            raise optuna.TrialPruned(reason) from err
        except BaseException as err:
            if caused_by_interrupt(err):  # Ctrl-C or SIGTERM: the rerun retries it, whatever the budget
                trial.set_user_attr(INTERRUPTED_ATTR, True)
            finish_run(self.runs, run_id, "FAIL", f"{type(err).__name__}: {err}")
            raise
        finish_run(self.runs, run_id, "COMPLETE")
        return value

    def _pruned(self, trial: optuna.Trial, run_id: str, reason: str) -> None:
        """Close a pruned trial's run (its learning curves were logged while it trained)."""
        finish_run(self.runs, run_id, "PRUNED", reason)

    def _run(self, trial: optuna.Trial, run_id: str) -> float:
        try:
            plan = self.preset.plan(trial, self.ctx)
        finally:  # also when planning prunes the trial: its params say why
            tracking.log_run_data(self.runs.mlc, run_id, params={f"optuna.{k}": v for k, v in trial.params.items()})
        cfg = with_values(self.cfg, {"train.fusion": plan.fusion, **plan.train})
        mlc = self.runs.mlc
        tracking.log_run_data(
            mlc,
            run_id,
            params=trial_params(plan, self.ctx.dataset, self.runs.preset, self.cfg.study.seeds, cfg),
            tags=cache_key_tags(
                cfg.paths.cache_dir, {m: self.data.dirs[m] for m in plan.models if m in self.data.dirs}
            ),
        )
        tracking.log_text(mlc, run_id, to_yaml(cfg), tracking.CONFIG_ARTIFACT)
        extract_ms = sum(
            float(FeatureCache(self.data.dirs[m].train).meta.get("extract_ms_per_sample", 0.0)) for m in plan.models
        )
        if plan.sweep_model is not None:
            return self._sweep(plan.sweep_model, cfg, trial, run_id, extract_ms)
        if self.preset.name == LAST_K and (verdict := probe_verdict(trial, plan)) is not None:
            tracking.log_run_data(mlc, run_id, metrics={tracking.PROBE_VAL_ACC: verdict[0]})
            if verdict[1]:  # dropped by the probe: an outcome, closed as a pruned trial, not a failure
                trial.set_user_attr("prune_reason", verdict[1])
                raise optuna.TrialPruned(verdict[1])
        selections = [Selection.of(m, plan.layers[m], self.data.dirs[m]) for m in plan.models]
        peaks: list[dict[str, float]] = []
        if plan.baseline is not None:
            fits = fit_baseline_units(
                self.data, cfg, plan.baseline["classifier"], plan.baseline["C"], self.cfg.study.seeds
            )
            results, extract_ms = [f.result for f in fits], fits[-1].extract_ms_per_sample
        else:
            with cuda_peak() as peak:  # every unit (fold x seed) in one batched model
                unit_list = units(cfg.data.cv_folds, self.cfg.study.seeds)
                results = fit_units(cfg, selections, unit_list, self._pruning(trial), run_logger(cfg, run_id))
            peaks.append(peak)
        extra = {tracking.PERF_EXTRACT_MS_PER_SAMPLE: extract_ms, **max_peak(peaks)}
        extra |= trial_records(mlc, run_id, cfg, self.data, plan.layers, results, extract_ms)
        mean = log_unit_results(mlc, run_id, results, extra)
        trial.set_user_attr(tracking.TRIAL_BEST_EPOCHS, [r.best_epoch for r in results])
        return _scored(trial, mean)

    def _pruning(self, trial: optuna.Trial) -> Callable[[int, float], None] | None:
        """Report the first unit's ``val/acc`` each epoch and prune as the median rule says (later units follow it)."""
        if not self.cfg.study.pruning:
            return None

        def report(epoch: int, val_acc: float) -> None:
            trial.report(val_acc, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")

        return report

    def _sweep(self, model: str, cfg: BenchConfig, trial: optuna.Trial, run_id: str, extract_ms: float) -> float:
        """Score every layer of ``model`` on every unit in one batched sweep (stored: ``studies.trials.sweep_store``).

        The trial's value is the best mean validation accuracy over the units. Costs are those of the whole sweep
        (when it was computed), except the parameters and test-time head cost, which are the chosen layer's head's.
        """
        with cuda_peak() as peak:
            sweep = unit_sweep(self.data.dirs[model], cfg)
        layers = [s.layer for s in sweep.scores[0]]
        val_u, test_u = unit_matrix(sweep, "val_acc"), unit_matrix(sweep, "test_acc")  # (layers, units)
        val, val_se = mean_se(val_u, axis=1)  # NaN for a layer the probe or the race stopped (studies.trials.racing)
        test = test_u.mean(axis=1)
        best = int(np.nanargmax(val))  # chosen on validation; first (shallowest) layer wins ties
        mean = {
            tracking.VAL_ACC: val[best],
            tracking.VAL_F1: unit_matrix(sweep, "val_f1")[best].mean(),
            tracking.TEST_ACC: test[best],
            tracking.TEST_F1: unit_matrix(sweep, "test_f1")[best].mean(),
        }
        perf = {
            tracking.PERF_FIT_S: sweep.fit_s,
            tracking.PERF_PEAK_RSS_MB: peak_rss_mb(),
            tracking.PERF_FEATURE_BYTES: sweep.scores[0][best].feature_bytes,
            **self._head_costs(model, layers[best], cfg),
            **max_peak([peak]),
        }
        mlc = self.runs.mlc
        tracking.log_run_data(
            mlc,
            run_id,
            params={f"layer.{model}": str(layers[best]), "sweep": "true"},
            tags={tracking.TAG_SWEEP_MODEL: model},
            metrics={
                **mean,
                **perf,
                tracking.PERF_HEAD_EPOCHS: sum(s.epochs for unit in sweep.scores for s in unit),
                tracking.VAL_ACC_SE: val_se[best],
                tracking.PERF_EXTRACT_MS_PER_SAMPLE: extract_ms,
                tracking.PERF_BEST_LAYER: layers[best],
                tracking.PERF_LAST_LAYER_TEST_ACC: test[-1],
                tracking.PERF_LAST_LAYER_VAL_ACC: val[-1],
            },
            histories={
                **sweep_curves(sweep.scores, best),
                tracking.SWEEP_VAL_ACC: list(val),
                tracking.SWEEP_VAL_ACC_SE: list(val_se),
                tracking.SWEEP_TEST_ACC: list(test),
                tracking.SEED_VAL_ACC: list(val_u[best]),
                tracking.SEED_TEST_ACC: list(test_u[best]),
                tracking.CV_VAL_ACC: list(val_u[best]),
            },
            step=max(s.epochs for unit in sweep.scores for s in unit),  # after the curves (steps = epochs)
        )
        tracking.log_array(mlc, run_id, val_u, tracking.SWEEP_UNITS_ARTIFACT)
        log_screen(mlc, run_id, sweep.scores)
        sweep_records(mlc, run_id, cfg, self.data.dirs[model], model, sweep.scores, layers[best], {**perf, **mean})
        trial.set_user_attr("best_layer", layers[best])
        trial.set_user_attr(tracking.TRIAL_BEST_EPOCHS, [unit[best].best_epoch for unit in sweep.scores])
        return _scored(trial, mean)

    def _head_costs(self, model: str, layer: int, cfg: BenchConfig) -> dict[str, float]:
        """Parameters, fused width and test ms/sample of the head the sweep trained for ``layer`` (timed afresh)."""
        dm = CachedFeatureDataModule.from_config([Selection.of(model, str(layer), self.data.dirs[model])], cfg)
        t = with_values(cfg, {"train.fusion": "concat"}).train
        head = FusionNet(dm.input_dims, dm.num_classes, t.fusion, t.proj_dim, t.hidden_dims, t.dropout, t.moe_experts)
        with torch_threads(cfg.train.threads):
            head_ms, _ = time_inference(head, dm.test_dataloader())
        return {
            tracking.PERF_PARAM_COUNT: sum(p.numel() for p in head.parameters()),
            tracking.PERF_FUSED_DIM: head.fused_dim,
            tracking.PERF_HEAD_MS_PER_SAMPLE: head_ms,
        }


def _epoch_means(curves: Sequence[dict[str, list[float]]], name: str) -> dict[int, float]:
    """Per epoch, the mean of ``name`` over the curves that reached that epoch."""
    longest = max((len(c.get(name, [])) for c in curves), default=0)
    return {e: statistics.fmean(c[name][e] for c in curves if len(c.get(name, [])) > e) for e in range(longest)}


def sweep_curves(scores: Sequence[Sequence[Any]], best: int) -> dict[str, dict[int, float]]:
    """A sweep's learning curves to log (step = epoch): layer ``best``'s (mean and per unit), and the mean over layers.

    ``scores[u][i]`` is unit u's ``LayerScore`` of the i-th layer; the per-unit curves of every layer stay in the
    sweep store (thousands of series would drown the run's charts).
    """
    chosen = [unit[best].curves for unit in scores]
    every = [s.curves for unit in scores for s in unit]
    out: dict[str, dict[int, float]] = {}
    for name in CURVES:
        out[name] = _epoch_means(chosen, name)
        out |= {unit_curve(name, u): dict(enumerate(c.get(name, []))) for u, c in enumerate(chosen)}
        out[f"{name}.{LAYERS_MEAN}"] = _epoch_means(every, name)
    return out


def log_unit_results(
    mlc: MlflowClient, run_id: str, results: Sequence[Any], extra: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Log a configuration's units (``FitResult`` per unit, index ``u = fold * seeds + seed``) as a trial does.

    Test predictions per unit (``PRED_ARTIFACT``), the mean of each score over the units, ``val/acc_se``, the
    per-unit histories ``seed/val_acc``, ``seed/test_acc`` and ``cv/val_acc`` (step = u), and ``extra`` metrics.

    Returns:
        The mean scores (``seed_mean_metrics``).
    """
    for u, r in enumerate(results):
        if r.test_pred.size:
            tracking.log_array(mlc, run_id, r.test_pred, tracking.PRED_ARTIFACT.format(seed=u))
    mean = seed_mean_metrics(results)
    val = [r.val_acc for r in results]
    histories = {
        tracking.SEED_VAL_ACC: val,
        tracking.SEED_TEST_ACC: [r.test_acc for r in results],
        tracking.CV_VAL_ACC: val,
    }
    metrics = {**mean, tracking.VAL_ACC_SE: float(mean_se(val)[1]), **(extra or {})}
    # After the learning curves (steps 0..E-1): the final scores are the runs' latest values.
    step = max(r.epochs for r in results)
    tracking.log_run_data(mlc, run_id, metrics=metrics, histories=histories, step=step)
    return mean


def seed_mean_metrics(results: Sequence[Any]) -> dict[str, float]:
    """Each score of ``FitResult.metrics()`` averaged over units (NaN ones, e.g. the baseline's val/loss, left out)."""
    mean = {name: statistics.fmean(r.metrics()[name] for r in results) for name in results[0].metrics()}
    return {name: v for name, v in mean.items() if not math.isnan(v)}


def _scored(trial: optuna.Trial, scores: dict[str, float]) -> float:
    """Store the four scores on the trial (``val/acc`` as its value, the others as user attributes); return it."""
    for name in (tracking.VAL_F1, tracking.TEST_ACC, tracking.TEST_F1):
        trial.set_user_attr(name.replace("/", "_"), float(scores[name]))
    return float(scores[tracking.VAL_ACC])
