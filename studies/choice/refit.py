"""``refit_study``: re-train a study's chosen configuration on all training rows, once per study seed, tracked.

The chosen configuration is the trial the study's summary chooses (``studies.choice.summary.chosen_trial``, by
``selection.rule``), or a named trial or trial run. Its head is trained again on every training row (no
validation rows held out) for a fixed number of epochs: the median over the trial's fits (every fold x seed
unit) of (best epoch + 1), read from the trial's ``best_epochs`` user attribute, or from its logged
``perf/best_epoch`` for trials that predate it. Seed k trains with ``train.seed + k``, as the trial's fits did.
A TF-IDF baseline trial is refit the same way (vectorizer and classifier on every training row, per seed), so
the heads and the baseline they are compared with are both trained on all of train; it has no head to export.
``run_study`` refits every finished study's chosen trial (``study.refit``) and records the refit's test
accuracy on the parent run as the study's result.

The refit is a child run of the study's parent run (``layerfuse.run_kind=refit``, tag ``layerfuse.refit_of`` =
the trial's run) with the trial's params plus ``refit.epochs``, ``test/*`` metrics, test predictions under the
trials' artifact names, the resolved config, and per seed the head an exported model applies (``HEAD_DIR``:
``net.safetensors``, ``scalers.npz``, ``head.json``). A finished refit of the same trial is reused.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmark.core import tracking
from benchmark.core.config import BenchConfig, load_config, to_yaml, with_values
from benchmark.core.errors import UserError
from benchmark.core.optuna_store import make_storage
from benchmark.core.run_inputs import log_inputs, refit_inputs
from benchmark.core.stores import check_storage_url, check_tracking, storage_file
from benchmark.core.study_data import StudyData, resolve_data
from lightning_modules.datamodule import Selection
from lightning_modules.engine import run_logger
from lightning_modules.fit import fit_all_rows
from lightning_modules.scores import AllRowsFit
from studies.choice.summary import chosen_trial
from studies.trials.baseline import fit_baseline_all_rows

log = logging.getLogger(__name__)

SECTIONS = ("extract", "data", "train")  # what a trial's config decides; paths, stores and speed stay the caller's
CALLER_KEYS = (
    "extract.show_progress",
    "extract.device",
    "train.threads",
    "train.accelerator",
    "train.precision",
    "data.num_workers",
)


@dataclass(frozen=True)
class Chosen:
    """A study's chosen trial and what its run recorded."""

    study: str
    trial: int
    run_id: str
    parent_run_id: str
    experiment_id: str
    params: dict[str, str]
    epochs: int
    seeds: int

    @property
    def baseline(self) -> tuple[str, float] | None:
        """``(classifier, C)`` of a TF-IDF baseline trial, None for a head on features."""
        if "baseline.classifier" not in self.params:
            return None
        return self.params["baseline.classifier"], float(self.params["baseline.C"])


@dataclass(frozen=True)
class RefitResult:
    """A finished refit run.

    Attributes:
        study, trial: The study and the number of the trial re-trained.
        run_id: The refit run; ``source_run_id`` the trial's run.
        layers: Model -> layer spec of the configuration; ``fusion`` its fusion.
        epochs: Epochs each seed trained.
        test_acc: Test accuracy per seed.
        reused: True when an earlier finished refit run was found and returned.
    """

    study: str
    trial: int
    run_id: str
    source_run_id: str
    layers: dict[str, str]
    fusion: str
    epochs: int
    test_acc: list[float]
    reused: bool = False


def _load_study(cfg: BenchConfig, name: str) -> optuna.Study:
    url = cfg.study.storage
    check_storage_url(url)
    check_tracking(cfg.tracking)
    local = storage_file(url)
    if local is not None and not Path(local).is_file():  # only reading: never leave an empty store behind
        raise UserError(f"study.storage={url!r}: no Optuna storage at {local} (no study run there yet); pass --storage")
    storage = make_storage(url, cfg.study.heartbeat)
    names = optuna.study.get_all_study_names(storage)
    if name not in names:
        from benchmark.core.registry import suggest

        raise UserError(
            f"no study '{name}' in {cfg.study.storage}.{suggest(name, names)} "
            f"Studies there: {', '.join(sorted(names)) or 'none'} (pass --storage for another store)"
        )
    return optuna.load_study(study_name=name, storage=storage)


def _pick(study: optuna.Study, trial: int | None, run_id: str | None, mlc: Any, rule: str) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if run_id is not None:
        found = [t for t in trials if t.user_attrs.get("mlflow_run_id") == run_id]
        if not found:
            raise UserError(f"run {run_id} is not a trial run of study '{study.study_name}'")
        picked = found[0]
    elif trial is not None:
        if not 0 <= trial < len(trials):
            raise UserError(f"study '{study.study_name}' has trials 0..{len(trials) - 1}, not {trial}")
        picked = trials[trial]
    else:
        best = chosen_trial(trials, mlc, rule)
        if best is None:
            raise UserError(f"study '{study.study_name}' has no complete trial to refit; run or resume it first")
        return best
    if picked.state != TrialState.COMPLETE:
        raise UserError(f"trial {picked.number} of '{study.study_name}' is {picked.state.name}, not COMPLETE")
    return picked


def refit_epochs(trial: FrozenTrial, run_metrics: dict[str, float]) -> int:
    """Median over the trial's fits of (best epoch + 1); older trials: their logged mean ``perf/best_epoch`` + 1."""
    best = trial.user_attrs.get(tracking.TRIAL_BEST_EPOCHS)
    if best:
        return max(1, round(statistics.median(int(e) + 1 for e in best)))
    if tracking.PERF_BEST_EPOCH in run_metrics:
        return max(1, round(run_metrics[tracking.PERF_BEST_EPOCH] + 1))
    raise UserError(f"trial {trial.number} recorded no best epoch (neither user attribute nor perf/best_epoch)")


def choose(cfg: BenchConfig, mlc: Any, study_name: str, trial: int | None = None, run_id: str | None = None) -> Chosen:
    """The chosen trial of ``study_name`` (best, or ``trial`` / ``run_id``) with its run's params and epochs.

    Raises:
        UserError: unknown study, trial or run; a trial that is not complete, has no run, or trained no head.
    """
    study = _load_study(cfg, study_name)
    t = _pick(study, trial, run_id, mlc, cfg.selection.rule)
    source = t.user_attrs.get("mlflow_run_id")
    if not source:
        raise UserError(f"trial {t.number} of '{study_name}' has no MLflow run (tracking.uri {cfg.tracking.uri})")
    run = mlc.get_run(source)
    params = dict(run.data.params)
    baseline = "baseline.classifier" in params
    return Chosen(
        study=study_name,
        trial=t.number,
        run_id=source,
        parent_run_id=run.data.tags.get(tracking.TAG_PARENT, ""),
        experiment_id=run.info.experiment_id,
        params=params,
        epochs=1 if baseline else refit_epochs(t, dict(run.data.metrics)),
        seeds=int(params.get("seeds", 1)),
    )


def trial_config(cfg: BenchConfig, mlc: Any, chosen: Chosen) -> BenchConfig:
    """``cfg`` with the trial's extract, data and train settings (from its ``config.yaml``) and its models."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlc.download_artifacts(chosen.run_id, tracking.CONFIG_ARTIFACT, tmp)
        logged = load_config(local, env={})
    values = {
        f"{sec}.{k}": v
        for sec in SECTIONS
        for k, v in asdict(getattr(logged, sec)).items()
        if f"{sec}.{k}" not in CALLER_KEYS
    }
    if chosen.baseline is None:
        values["extract.models"] = tuple(chosen.params["models"].split(","))
        values["train.fusion"] = chosen.params["fusion"]
    return with_values(cfg, values)


def layers_of(chosen: Chosen) -> dict[str, str]:
    """Model -> layer spec of the chosen configuration, in its model order (none for a baseline)."""
    models = [m for m in chosen.params.get("models", "").split(",") if f"layer.{m}" in chosen.params]
    return {m: chosen.params[f"layer.{m}"] for m in models}


def find_refit(mlc: Any, chosen: Chosen) -> str | None:
    """The latest FINISHED refit run of ``chosen``'s trial, if any."""
    runs = mlc.search_runs(
        [chosen.experiment_id],
        f"tags.`{tracking.TAG_REFIT_OF}` = '{chosen.run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def refit_study(
    cfg: BenchConfig,
    study_name: str,
    trial: int | None = None,
    run_id: str | None = None,
    force: bool = False,
    data: StudyData | None = None,
    mlc: Any = None,
) -> RefitResult:
    """Refit the chosen configuration of ``study_name`` on all training rows, once per study seed (see module doc).

    Args:
        cfg: Where the stores and caches are (``study.storage``, ``tracking.uri``, ``paths``).
        study_name: The study.
        trial: A trial number instead of the best trial.
        run_id: A trial's MLflow run id instead of the best trial.
        force: Refit even when a finished refit of that trial exists.
        data: The study's dataset and caches when its runner already resolved them (else resolved here).
        mlc: The study's MLflow client when its runner already opened it (else opened here).

    Raises:
        UserError: see ``choose``; missing caches (with the extract command).
    """
    mlc = mlc or tracking.client(cfg.tracking)
    chosen = choose(cfg, mlc, study_name, trial, run_id)
    layers = layers_of(chosen)
    existing = None if force else find_refit(mlc, chosen)
    if existing is not None:
        log.info("trial %d of %s: reusing refit run %s", chosen.trial, study_name, existing)
        epochs = int(mlc.get_run(existing).data.params[tracking.PARAM_REFIT_EPOCHS])
        return _result(study_name, chosen, existing, layers, epochs, _seed_test_accs(mlc, existing), reused=True)
    tcfg = trial_config(cfg, mlc, chosen)
    data = data or resolve_data(tcfg, tuple(layers))
    selections = [Selection.of(m, s, data.dirs[m]) for m, s in layers.items()]
    rid = _open_refit_run(mlc, study_name, chosen)
    try:
        tracking.log_run_data(mlc, rid, params={**chosen.params, tracking.PARAM_REFIT_EPOCHS: chosen.epochs})
        log_inputs(mlc, rid, refit_inputs(data))
        tracking.log_text(mlc, rid, to_yaml(tcfg), tracking.CONFIG_ARTIFACT)
        fits = _fit_seeds(mlc, rid, tcfg, data, chosen, selections, layers)
        tracking.log_run_data(
            mlc,
            rid,
            metrics={
                tracking.TEST_ACC: statistics.fmean(f.test_acc for f in fits),
                tracking.TEST_F1: statistics.fmean(f.test_f1 for f in fits),
                tracking.PERF_FIT_S: statistics.fmean(f.fit_s for f in fits),
                tracking.PERF_TRAIN_ROWS: fits[0].train_rows,
            },
            histories={tracking.SEED_TEST_ACC: [f.test_acc for f in fits]},
            step=chosen.epochs,  # after the learning curves (steps = epochs)
        )
    except BaseException as err:
        tracking.end_on_error(mlc, rid, err)
        raise
    mlc.set_terminated(rid, "FINISHED")
    log.info("refit of trial %d of %s: run %s, test acc %s", chosen.trial, study_name, rid, [f.test_acc for f in fits])
    return _result(study_name, chosen, rid, layers, chosen.epochs, [f.test_acc for f in fits])


def _seed_test_accs(mlc: Any, run_id: str) -> list[float]:
    return [m.value for m in sorted(mlc.get_metric_history(run_id, tracking.SEED_TEST_ACC), key=lambda m: m.step)]


def _result(
    study_name: str,
    chosen: Chosen,
    run_id: str,
    layers: dict[str, str],
    epochs: int,
    test_accs: list[float],
    reused: bool = False,
) -> RefitResult:
    fusion = chosen.params.get("fusion", "")
    return RefitResult(study_name, chosen.trial, run_id, chosen.run_id, layers, fusion, epochs, test_accs, reused)


def _open_refit_run(mlc: Any, study_name: str, chosen: Chosen) -> str:
    """A new refit run of ``chosen``'s trial, a child of the study's parent run (dead refits closed first)."""
    tracking.close_dead_runs(mlc, chosen.experiment_id, tracking.KIND_REFIT)
    run = mlc.create_run(
        chosen.experiment_id,
        run_name=f"{study_name}#{chosen.trial}-refit",
        tags={
            tracking.TAG_PARENT: chosen.parent_run_id,
            tracking.TAG_STUDY: study_name,
            tracking.TAG_KIND: tracking.KIND_REFIT,
            tracking.TAG_PRESET: chosen.params.get("preset", ""),
            tracking.TAG_TRIAL: str(chosen.trial),
            tracking.TAG_REFIT_OF: chosen.run_id,
            **tracking.version_tags(),
            **tracking.owner_tags(),
        },
    )
    return str(run.info.run_id)


@dataclass(frozen=True)
class _SeedFit:
    test_acc: float
    test_f1: float
    fit_s: float
    train_rows: int


def _fit_seeds(
    mlc: Any,
    rid: str,
    tcfg: BenchConfig,
    data: StudyData,
    chosen: Chosen,
    selections: list[Selection],
    layers: dict[str, str],
) -> list[_SeedFit]:
    """Fit every seed on all training rows; log its test predictions (and a head's files) to the refit run."""
    fits = []
    if chosen.baseline is not None:
        for k, b in enumerate(fit_baseline_all_rows(data, tcfg, *chosen.baseline, chosen.seeds)):
            tracking.log_array(mlc, rid, b.result.test_pred, tracking.PRED_ARTIFACT.format(seed=k))
            fits.append(_SeedFit(b.result.test_acc, b.result.test_f1, b.result.fit_s, b.train_rows))
        return fits
    # Every seed trains at once in the one engine; the learning curves (train/loss per epoch) go to the refit run.
    all_seeds = fit_all_rows(tcfg, selections, chosen.epochs, chosen.seeds, run_logger(tcfg, rid))
    for k, fit in enumerate(all_seeds):
        tracking.log_array(mlc, rid, fit.test_pred, tracking.PRED_ARTIFACT.format(seed=k))
        log_head(mlc, rid, k, fit, layers)
        fits.append(_SeedFit(fit.test_acc, fit.test_f1, fit.fit_s, fit.train_rows))
    return fits


def log_head(mlc: Any, run_id: str, seed: int, fit: AllRowsFit, layers: dict[str, str]) -> None:
    """Store one seed's head under ``HEAD_DIR``: weights (safetensors), scalers (npz) and ``head.json``."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_file({k: v.contiguous() for k, v in fit.state.items()}, str(folder / tracking.HEAD_NET_FILE))
        arrays: dict[str, np.ndarray] = {}
        for i, (mean, std) in enumerate(zip(fit.means, fit.stds, strict=True)):
            if mean is not None and std is not None:
                arrays[f"mean_{i}"], arrays[f"std_{i}"] = mean, std
        np.savez(folder / tracking.HEAD_SCALERS_FILE, **arrays)  # type: ignore[arg-type]
        head = {"net": fit.net, "label_names": fit.label_names, "layers": layers, "epochs": fit.epochs}
        (folder / tracking.HEAD_JSON).write_text(json.dumps(head, indent=1))
        mlc.log_artifacts(run_id, str(folder), tracking.HEAD_DIR.format(seed=seed))
