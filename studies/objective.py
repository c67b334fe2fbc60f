"""The study objective: plan a trial, train and score it (over ``study.seeds`` seeds), track it in MLflow.

Every trial gets exactly one nested MLflow run, created before planning so that trials pruned for an invalid
combination are tracked too; the run's id is stored in the trial's ``mlflow_run_id`` user attribute, the
Optuna params are logged verbatim as ``optuna.<name>`` once planned, and the run ends FINISHED (COMPLETE),
KILLED (PRUNED, with the ``val/acc`` values reported until then as its history) or FAILED (FAIL, with the
error in tag ``layerfuse.error``) with tag ``optuna.trial_state``. Errors are not caught: a trial that raises
fails and stops its worker (the runner retries it on the next run); only CUDA running out of memory prunes
the trial, with a logged reason.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from benchmark.core.config import BenchConfig, to_yaml, with_values
from benchmark.core.run_inputs import log_inputs
from lightning_modules.callbacks import peak_rss_mb, time_inference, torch_threads
from lightning_modules.datamodule import CachedFeatureDataModule
from lightning_modules.module import FusionClassifier
from lightning_modules.train import fit_and_evaluate
from studies.baseline import fit_baseline
from studies.best_layers import seed_mean, sweep_seed
from studies.caches import ModelDirs
from studies.inputs import cache_key_tags
from studies.presets import Preset, StudyContext, TrialPlan

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


@contextmanager
def cuda_peak() -> Iterator[dict[str, float]]:
    """Yield a dict that receives ``perf/cuda_peak_mb`` of the enclosed block when CUDA is in use."""
    out: dict[str, float] = {}
    # torch leaves torch.cuda.is_initialized unannotated
    on_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    yield out
    if on_cuda or (torch.cuda.is_available() and torch.cuda.is_initialized()):  # type: ignore[no-untyped-call]
        out["perf/cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20


def max_peak(peaks: list[dict[str, float]]) -> dict[str, float]:
    """``perf/cuda_peak_mb`` over several blocks (seeds): the largest, or nothing when none ran on CUDA."""
    values = [p["perf/cuda_peak_mb"] for p in peaks if "perf/cuda_peak_mb" in p]
    return {"perf/cuda_peak_mb": max(values)} if values else {}


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
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
    runs.mlc.set_terminated(run_id, status)


def create_trial_run(runs: StudyRuns, number: int) -> str:
    """Create trial ``number``'s nested run, tagged with its study and number from the start; returns its id.

    The tags make the run findable before the trial records its id (``mlflow_run_id``): a worker killed in
    between leaves a RUNNING run that ``studies.orphans.close_orphan_runs`` closes on the next run.
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
        dirs: Cache directories per model alias.
        runs: MLflow destination.
    """

    def __init__(
        self, cfg: BenchConfig, preset: Preset, ctx: StudyContext, dirs: dict[str, ModelDirs], runs: StudyRuns
    ) -> None:
        self.cfg, self.preset, self.ctx, self.dirs, self.runs = cfg, preset, ctx, dirs, runs

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
            finish_run(self.runs, run_id, "FAIL", f"{type(err).__name__}: {err}")
            raise
        finish_run(self.runs, run_id, "COMPLETE")
        return value

    def _pruned(self, trial: optuna.Trial, run_id: str, reason: str) -> None:
        """Close a pruned trial's run with the ``val/acc`` values it reported (step = epoch), if it trained."""
        reported = next(
            (
                t.intermediate_values
                for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number == trial.number
            ),
            {},
        )
        if reported:
            tracking.log_run_data(self.runs.mlc, run_id, histories={"val/acc": reported})
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
            tags=cache_key_tags(cfg, {m: self.dirs[m].train for m in plan.models if m in self.dirs}),
        )
        tracking.log_text(mlc, run_id, to_yaml(cfg), tracking.CONFIG_ARTIFACT)
        extract_ms = sum(
            float(FeatureCache(self.dirs[m].train).meta.get("extract_ms_per_sample", 0.0)) for m in plan.models
        )
        if plan.sweep_model is not None:
            return self._sweep(plan.sweep_model, cfg, trial, run_id, extract_ms)
        selections = [self.dirs[m].selection(m, plan.layers[m]) for m in plan.models]
        results, peaks = [], []
        for k in range(self.cfg.study.seeds):
            seed_cfg = with_values(cfg, {"train.seed": cfg.train.seed + k})
            with cuda_peak() as peak:
                if plan.baseline is not None:
                    fitted = fit_baseline(seed_cfg, plan.baseline["classifier"], plan.baseline["C"])
                    results.append(fitted.result)
                    extract_ms = fitted.extract_ms_per_sample
                else:
                    results.append(fit_and_evaluate(seed_cfg, selections, callbacks=self._pruning(trial, k)))
            peaks.append(peak)
            if results[-1].test_pred.size:
                tracking.log_array(mlc, run_id, results[-1].test_pred, tracking.PRED_ARTIFACT.format(seed=k))
        trial.set_user_attr(tracking.TRIAL_BEST_EPOCHS, [r.best_epoch for r in results])
        mean = seed_mean_metrics(results)
        metrics = {**mean, "perf/extract_ms_per_sample": extract_ms, **max_peak(peaks)}
        histories = {"seed/val_acc": [r.val_acc for r in results], "seed/test_acc": [r.test_acc for r in results]}
        tracking.log_run_data(mlc, run_id, metrics=metrics, histories=histories)
        return _scored(trial, mean)

    def _pruning(self, trial: optuna.Trial, seed_index: int) -> list[Any]:
        """The pruning callback for the first seed's fit (later seeds of a surviving trial run to the end)."""
        if seed_index or not self.cfg.study.pruning:
            return []
        from optuna_integration import PyTorchLightningPruningCallback

        return [PyTorchLightningPruningCallback(trial, monitor="val/acc")]

    def _sweep(self, model: str, cfg: BenchConfig, trial: optuna.Trial, run_id: str, extract_ms: float) -> float:
        """Score every layer of ``model`` in one batched sweep; the trial's value is its best validation accuracy.

        Costs are those of the whole sweep (mean over seeds; CUDA peak: the largest), except the parameters
        and test-time head cost, which are those of the chosen layer's head.
        """
        d = self.dirs[model]
        per_seed, peaks, fit_s = [], [], []
        for k in range(self.cfg.study.seeds):
            start = time.perf_counter()
            with cuda_peak() as peak:
                per_seed.append(sweep_seed(d, cfg, k))
            fit_s.append(time.perf_counter() - start)
            peaks.append(peak)
        layers = [s.layer for s in per_seed[0]]
        val, test = seed_mean(per_seed, "val_acc"), seed_mean(per_seed, "test_acc")
        val_f1, test_f1 = seed_mean(per_seed, "val_f1"), seed_mean(per_seed, "test_f1")
        best = int(np.argmax(val))  # chosen on validation; first (shallowest) layer wins ties
        mean = {"val/acc": val[best], "val/f1": val_f1[best], "test/acc": test[best], "test/f1": test_f1[best]}
        perf = {
            "perf/fit_s": statistics.fmean(fit_s),
            "perf/peak_rss_mb": peak_rss_mb(),
            "perf/feature_bytes": statistics.fmean(s[best].feature_bytes for s in per_seed),
            **self._head_costs(model, layers[best], cfg),
            **max_peak(peaks),
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
                "perf/extract_ms_per_sample": extract_ms,
                "perf/best_layer": layers[best],
                "perf/last_layer_test_acc": test[-1],
                "perf/last_layer_val_acc": val[-1],
            },
            histories={
                "sweep/val_acc": list(val),
                "sweep/test_acc": list(test),
                "seed/val_acc": [s[best].val_acc for s in per_seed],
                "seed/test_acc": [s[best].test_acc for s in per_seed],
            },
        )
        trial.set_user_attr("best_layer", layers[best])
        trial.set_user_attr(tracking.TRIAL_BEST_EPOCHS, [s[best].best_epoch for s in per_seed])
        return _scored(trial, mean)

    def _head_costs(self, model: str, layer: int, cfg: BenchConfig) -> dict[str, float]:
        """Parameters, fused width and test ms/sample of the head the sweep trained for ``layer`` (timed afresh)."""
        dm = CachedFeatureDataModule.from_config([self.dirs[model].selection(model, str(layer))], cfg)
        head = FusionClassifier.from_config(
            dm.input_dims, dm.num_classes, with_values(cfg, {"train.fusion": "concat"}).train
        )
        with torch_threads(cfg.train.threads):
            head_ms, _ = time_inference(head, dm.test_dataloader())
        return {
            "perf/param_count": head.param_count,
            "perf/fused_dim": head.fused_dim,
            "perf/head_ms_per_sample": head_ms,
        }


def seed_mean_metrics(results: Sequence[Any]) -> dict[str, float]:
    """Each score of ``FitResult.metrics()`` averaged over seeds (NaN ones, e.g. the baseline's val/loss, left out)."""
    mean = {name: statistics.fmean(r.metrics()[name] for r in results) for name in results[0].metrics()}
    return {name: v for name, v in mean.items() if not math.isnan(v)}


def _scored(trial: optuna.Trial, scores: dict[str, float]) -> float:
    """Store the four scores on the trial (``val/acc`` as its value, the others as user attributes); return it."""
    for name in ("val/f1", "test/acc", "test/f1"):
        trial.set_user_attr(name.replace("/", "_"), float(scores[name]))
    return float(scores["val/acc"])
