"""``run_study(cfg)``: create or resume an Optuna study, run its trials in K worker processes, summarise it.

Re-running the same command resumes: the study (``load_if_exists``), its MLflow parent run (id in the study's
user attributes) and its best layers are reused, and only the trials still missing are run; failed trials
(a killed worker's, once its heartbeat is stale, or one that raised) are retried with their params first. A
study resumed with different settings (models, caches, head defaults) is refused, since its trials would not
be comparable.

Workers and hosts coordinate through the study lock (``studies.storage.StudyLock``): set-up (fingerprint,
parent run, best layers) happens once, and each worker starts a trial only while finished plus running trials
are below the target, so the study ends with exactly that many finished trials. A worker with nothing left
to start waits for the running trials: if one was a dead worker's, it is failed once stale and retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import shlex
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache, is_complete
from benchmark.core.config import BenchConfig, DataConfig, PathsConfig, StudyConfig
from benchmark.core.errors import UserError
from benchmark.core.keys import load_text_split, resolve_features
from benchmark.core.text_data import dataset_label
from studies.objective import ModelDirs, Objective, StudyRuns, finish_run, seed_mean, sweep_seed
from studies.presets import PRESETS, Preset, StudyContext, check_fusions, check_models
from studies.pruning import make_pruner
from studies.storage import StudyLock, make_storage, retry_failed

log = logging.getLogger(__name__)
# Heartbeats, grouped TPE and stale-trial retries are stable in practice but flagged experimental by Optuna.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TAG_ERROR = "layerfuse.error"  # on the parent run: the error that stopped a worker of the current attempt
# Settings that change which cache an extraction writes, besides the flags below (passed on with --set).
EXTRACT_SETTINGS = {
    "paths": (PathsConfig(), ("data_dir", "models_dir", "cache_dir")),
    "data": (DataConfig(), ("text_column", "label_column", "hf_config")),
}
RESULT_NEUTRAL = ("threads",)  # train settings that change speed, not results: a study may resume with others


@dataclass(frozen=True)
class StudyOutcome:
    """The state of a study after ``run_study``."""

    name: str
    storage: str
    experiment: str
    parent_run_id: str
    complete: int
    pruned: int
    failed: int
    best_number: int | None
    best_value: float | None
    best_test_acc: float | None
    best_params: dict[str, Any]


def study_name(cfg: BenchConfig) -> str:
    """``study.name`` or ``<preset>-<dataset>-<model+model>`` (``<preset>-<dataset>`` without models)."""
    if cfg.study.name:
        return cfg.study.name
    dataset = dataset_label(cfg.extract.dataset)
    if not _models_used(cfg):
        return f"{cfg.study.preset}-{dataset}"
    # A model given as a folder is named by the folder (hub ids keep their org/name).
    models = [Path(m).name if Path(m).is_dir() else m for m in cfg.extract.models]
    return f"{cfg.study.preset}-{dataset}-{'+'.join(models)}"


def _models_used(cfg: BenchConfig) -> tuple[str, ...]:
    """The configured models, or none for a preset that reads texts, not features (the TF-IDF baseline)."""
    known = cfg.study.preset in PRESETS
    return cfg.extract.models if not known or PRESETS.get(cfg.study.preset).needs_features else ()


def extract_command(cfg: BenchConfig, models: list[str]) -> str:
    """The exact ``layerfuse extract`` command that creates the missing caches (non-default paths and columns included)."""
    e = cfg.extract
    parts = [
        "layerfuse",
        "extract",
        "--model",
        ",".join(models),
        "--dataset",
        e.dataset,
        "--split",
        ",".join(_splits(cfg)),
    ]
    parts += ["--limit", str(e.limit)] if e.limit else []
    parts += ["--max-length", str(e.max_length)] if e.max_length else []
    parts += ["--pooling", e.pooling] if e.pooling else []
    parts += ["--dtype", e.dtype] if e.dtype != "auto" else []
    if e.dtype == "auto" and e.device != "auto":  # an automatic dtype depends on the device
        parts += ["--device", e.device]
    for section, (defaults, keys) in EXTRACT_SETTINGS.items():
        for key in keys:
            value = getattr(getattr(cfg, section), key)
            if value != getattr(defaults, key):
                parts += ["--set", f"{section}.{key}={value}"]
    return shlex.join(parts)


def _splits(cfg: BenchConfig) -> list[str]:
    return ["train", "test"] + ([cfg.data.val_split] if cfg.data.val_split else [])


def resolve_dirs(cfg: BenchConfig) -> dict[str, ModelDirs]:
    """Cache directories of every model, or a ``UserError`` naming the extraction to run."""
    splits = {s: load_text_split(cfg, s) for s in _splits(cfg)}
    dirs, missing = {}, []
    for model in cfg.extract.models:
        paths = {s: resolve_features(cfg, model, ts).path for s, ts in splits.items()}
        if not all(is_complete(p) for p in paths.values()):
            missing.append(model)
            continue
        dirs[model] = ModelDirs(paths["train"], paths["test"], paths.get(cfg.data.val_split or ""))
    if missing:
        raise UserError(
            f"no complete feature cache for {', '.join(missing)} on {cfg.extract.dataset}; "
            f"run first: {extract_command(cfg, missing)}"
        )
    return dirs


TEXTS_KEY = "texts"  # fingerprint entry of the presets that read texts: each split's data hash


def _fingerprint(cfg: BenchConfig, dirs: dict[str, ModelDirs]) -> str:
    blob = {
        "preset": cfg.study.preset,
        "dataset": cfg.extract.dataset,
        "models": list(_models_used(cfg)),
        "caches": {m: str(d.train.relative_to(cfg.paths.cache_dir)) for m, d in dirs.items()},
        "train": {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in RESULT_NEUTRAL},
        "data": dataclasses.asdict(cfg.data),
        "seeds": cfg.study.seeds,
    }
    if not dirs:  # a preset that reads the texts, not caches (the lexical baseline): the texts stand for the caches
        blob[TEXTS_KEY] = {s: load_text_split(cfg, s).data_sha256[:16] for s in _splits(cfg)}
    defaults = StudyConfig()
    for key in ("fusions", "max_k"):  # search-space settings; left out at their defaults so older studies still resume
        if getattr(cfg.study, key) != getattr(defaults, key):
            blob[f"study.{key}"] = getattr(cfg.study, key)
    return json.dumps(blob, sort_keys=True, default=str)


def _check_fingerprint(study: optuna.Study, fingerprint: str) -> None:
    old = study.user_attrs.get("config_fingerprint")
    if old is None:
        study.set_user_attr("config_fingerprint", fingerprint)
        return
    if old != fingerprint:
        a, b = json.loads(old), json.loads(fingerprint)
        if TEXTS_KEY not in a and a == {k: v for k, v in b.items() if k != TEXTS_KEY}:
            # Baseline studies from before the texts were fingerprinted: nothing to compare with, so record them now
            # (a later run on other texts, e.g. another extract.limit, is then refused).
            log.warning("study '%s' predates the check of its texts: recording the current ones", study.study_name)
            study.set_user_attr("config_fingerprint", fingerprint)
            return
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        raise UserError(
            f"study '{study.study_name}' was created with other settings ({', '.join(diff)} differ); "
            "rerun with the original settings to resume, or start a new study: --name NAME (layerfuse study), or "
            "stores of its own (--set study.storage=sqlite:///mlruns/optuna-new.db "
            "--set tracking.uri=sqlite:///mlruns/mlflow-new.db)"
        )


def _close_stale_run(mlc: Any) -> Any:
    def close(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        log.warning(
            "trial %d of %s lost its worker (no heartbeat): marked FAIL, to be retried", trial.number, study.study_name
        )
        if run_id:
            finish_run(StudyRuns(mlc, "", "", study.study_name, ""), run_id, "FAIL", "worker died (heartbeat lost)")

    return close


def _open_study(cfg: BenchConfig, preset: Preset, ctx: StudyContext, mlc: Any) -> optuna.Study:
    storage = make_storage(cfg.study.storage, cfg.study.heartbeat, on_stale=_close_stale_run(mlc))
    return optuna.create_study(
        study_name=study_name(cfg),
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=preset.sampler(ctx, cfg.train.seed),
        pruner=make_pruner(cfg.study, preset.prune_within),
    )


def _parent_run(study: optuna.Study, mlc: Any, experiment_id: str, cfg: BenchConfig) -> str:
    """The study's parent run: created by the first process (under the study lock), reopened by later ones."""
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id is None:
        run = mlc.create_run(
            experiment_id,
            run_name=study.study_name,
            tags={
                tracking.TAG_STUDY: study.study_name,
                tracking.TAG_KIND: tracking.KIND_STUDY,
                tracking.TAG_PRESET: cfg.study.preset,
                "optuna.storage": cfg.study.storage.split("@")[-1],
                **tracking.version_tags(),
            },
        )
        run_id = run.info.run_id
        tracking.log_run_data(
            mlc,
            run_id,
            params={
                "preset": cfg.study.preset,
                "dataset": cfg.extract.dataset,
                "models": ",".join(_models_used(cfg)),
                "seeds": cfg.study.seeds,
            },
        )
        tracking.log_array(mlc, run_id, load_text_split(cfg, "test").labels, tracking.TEST_LABELS_ARTIFACT)
        study.set_user_attr("mlflow_parent_run_id", run_id)
    else:
        mlc.update_run(run_id, status="RUNNING")
        if TAG_ERROR in mlc.get_run(run_id).data.tags:  # the previous attempt's error; this attempt starts clean
            mlc.delete_tag(run_id, TAG_ERROR)
    return str(run_id)


def _fail_parent(mlc: Any, run_id: str, err: BaseException) -> None:
    """Mark the parent run FAILED (KILLED on Ctrl-C) with the error, keeping the first error a worker recorded."""
    if not isinstance(err, _WorkersFailed) or TAG_ERROR not in mlc.get_run(run_id).data.tags:
        tracking.log_run_data(mlc, run_id, tags={TAG_ERROR: f"{type(err).__name__}: {err}"[:5000]})
    mlc.set_terminated(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")


class _WorkersFailed(RuntimeError):
    """Worker processes exited with an error (each recorded its own on the parent run)."""


def _best_layers(study: optuna.Study, cfg: BenchConfig, dirs: dict[str, ModelDirs]) -> dict[str, int]:
    """Each model's validation-best single layer, computed once per study and stored in it.

    The same choice as the layer-sweep preset's: the fast sweep with each of the study's seeds, best mean validation
    accuracy, so the layers fused are the ones the layer tables report.
    """
    stored = study.user_attrs.get("best_layers")
    if stored is not None:
        return {k: int(v) for k, v in stored.items()}
    best = {}
    for model, d in dirs.items():
        per_seed = [sweep_seed(d, cfg, k) for k in range(cfg.study.seeds)]
        val = seed_mean(per_seed, "val_acc")
        i = int(val.argmax())  # first (shallowest) layer wins ties, as in the layer-sweep preset
        best[model] = per_seed[0][i].layer
        log.info(
            "%s: best layer on validation %d (mean val acc over %d seeds %.4f)",
            model,
            best[model],
            len(per_seed),
            val[i],
        )
    study.set_user_attr("best_layers", best)
    return best


def _target(preset: Preset, ctx: StudyContext, cfg: BenchConfig) -> int:
    size = preset.grid_size(ctx)
    return size if size is not None else cfg.study.trials


@dataclass
class _Setup:
    """A process's handles on one study."""

    preset: Preset
    ctx: StudyContext
    dirs: dict[str, ModelDirs]
    mlc: Any
    experiment_id: str
    study: optuna.Study
    lock: StudyLock


def _setup(cfg: BenchConfig) -> _Setup:
    preset = PRESETS.get(cfg.study.preset)
    if preset.needs_features:
        if not cfg.extract.models:
            raise UserError("no model selected: pass --models a,b (see `layerfuse ls models`)")
        check_models(preset, cfg.extract.models)
        dirs = resolve_dirs(cfg)
    else:
        dirs = {}
    ctx = StudyContext(
        cfg.extract.dataset,
        cfg.extract.models,
        {m: FeatureCache(d.train).num_layers for m, d in dirs.items()},
        fusions=check_fusions(cfg.study.fusions),
        max_k=cfg.study.max_k,
    )
    lock = StudyLock(cfg.study.storage)
    with lock:  # one process at a time creates a fresh database's tables (MLflow's, Optuna's) and the study
        mlc = tracking.client(cfg.tracking)
        experiment_id = tracking.ensure_experiment(mlc, tracking.experiment_name(cfg.extract.dataset), cfg.tracking)
        study = _open_study(cfg, preset, ctx, mlc)
        _check_fingerprint(study, _fingerprint(cfg, dirs))
    return _Setup(preset, ctx, dirs, mlc, experiment_id, study, lock)


def _optimize(s: _Setup, cfg: BenchConfig) -> None:
    """One worker: start trials while finished + running trials are below the target, then wait for the running ones."""
    from tqdm.auto import tqdm

    study, lock = s.study, s.lock
    ctx = (
        dataclasses.replace(s.ctx, best_layers=_best_layers(study, cfg, s.dirs))
        if s.preset.needs_best_layers
        else s.ctx
    )
    runs = StudyRuns(
        s.mlc, s.experiment_id, str(study.user_attrs["mlflow_parent_run_id"]), study.study_name, s.preset.name
    )
    objective = Objective(cfg, s.preset, ctx, s.dirs, runs)

    def start(trial: optuna.Trial) -> float:
        lock.release()  # the trial exists and counts as running: other workers may decide now
        return objective(trial)

    target = _target(s.preset, ctx, cfg)
    deadline = None if cfg.study.timeout is None else time.monotonic() + cfg.study.timeout
    poll = max(0.5, min(2.0, cfg.study.heartbeat / 2))
    bar = tqdm(total=target, desc=study.study_name, disable=not (cfg.extract.show_progress and cfg.study.workers == 1))
    waiting = False
    while deadline is None or time.monotonic() < deadline:
        with lock:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL once its heartbeat is stale
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            bar.update(finished - bar.n)
            if finished >= target:
                break
            if finished + running < target:
                retry_failed(study)  # the next ask pops the retry (the oldest waiting trial) before sampling anew
                study.optimize(start, n_trials=1, gc_after_trial=True)
                waiting = False
                continue
        if not waiting:
            log.info(
                "%s: %d of %d trials finished, %d running elsewhere; waiting for them (a dead worker's trial "
                "is retried once its heartbeat is %ss old)",
                study.study_name,
                finished,
                target,
                running,
                max(3, int(3 * cfg.study.heartbeat)),
            )
            waiting = True
        time.sleep(poll)
    bar.close()


def _worker(cfg: BenchConfig) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = _setup(cfg)
    try:
        _optimize(s, cfg)
    except BaseException as err:
        _fail_parent(s.mlc, str(s.study.user_attrs["mlflow_parent_run_id"]), err)
        raise


def run_study(cfg: BenchConfig) -> StudyOutcome:
    """Create or resume the study ``cfg`` describes, run it with ``cfg.study.workers`` processes, and summarise it.

    A worker that raises stops the run: its trial is FAIL (retried on the next run) and the parent run is
    marked FAILED with the error.

    Raises:
        UserError: unknown preset/model/dataset, missing caches (with the extract command), too few models,
            a resumed study with different settings, or an unsupported storage URL.
    """
    s = _setup(cfg)
    with s.lock:  # once per study, whichever process or host comes first
        parent = _parent_run(s.study, s.mlc, s.experiment_id, cfg)
        if s.preset.needs_best_layers:
            _best_layers(s.study, cfg, s.dirs)  # before any trial, so every worker reads the same layers
    try:
        if cfg.study.workers == 1:
            _optimize(s, cfg)
        else:
            ctx_mp = multiprocessing.get_context("spawn")  # torch and SQLAlchemy do not survive fork
            procs = [
                ctx_mp.Process(target=_worker, args=(cfg,), name=f"layerfuse-worker-{i}")
                for i in range(cfg.study.workers)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad:
                raise _WorkersFailed(
                    f"{len(bad)} of {len(procs)} study workers failed (exit codes {bad}); see their log above"
                )
    except BaseException as err:
        _fail_parent(s.mlc, parent, err)
        raise
    return summarise(s.study, cfg, s.mlc, parent)


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete trial the reports select: highest val/acc, then highest val/f1, then lowest number.

    Optuna's ``best_trial`` stops at the first of equal values, so on a validation tie (TF-IDF classifiers often
    tie on accuracy) the stage line named a different trial from the report's.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return (
        max(complete, key=lambda t: (t.value, t.user_attrs.get("val_f1", -math.inf), -t.number)) if complete else None
    )


def summarise(study: optuna.Study, cfg: BenchConfig, mlc: Any, parent_run_id: str) -> StudyOutcome:
    """Count trial states, find the best trial, and record the summary on the parent run."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = best_trial(trials)
    outcome = StudyOutcome(
        name=study.study_name,
        storage=cfg.study.storage,
        experiment=tracking.experiment_name(cfg.extract.dataset),
        parent_run_id=parent_run_id,
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL],
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_test_acc=best.user_attrs.get("test_acc") if best else None,
        best_params=dict(best.params) if best else {},
    )
    metrics = {"study/complete": outcome.complete, "study/pruned": outcome.pruned, "study/failed": outcome.failed}
    if best is not None:
        metrics.update({"best/val_acc": float(best.value), "best/trial": best.number})
        if outcome.best_test_acc is not None:
            metrics["best/test_acc"] = float(outcome.best_test_acc)
    tracking.log_run_data(
        mlc,
        parent_run_id,
        metrics=metrics,
        tags={"best_trial_run_id": best.user_attrs.get("mlflow_run_id", "") if best else ""},
    )
    tracking.log_text(
        mlc, parent_run_id, json.dumps(dataclasses.asdict(outcome), indent=2, default=str), "study_summary.json"
    )
    mlc.set_terminated(parent_run_id, "FINISHED")
    return outcome
