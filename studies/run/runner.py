"""``run_study(cfg)``: create or resume an Optuna study, run its trials in K worker processes, summarise it.

Re-running the same command resumes: the study (``load_if_exists``), its MLflow parent run (id in the study's
user attributes) and its best layers are reused, and only the trials still missing are run; failed trials
(a killed worker's, once its heartbeat is stale, or one that raised) are retried with their params first. A
study resumed with different settings (models, caches, head defaults) is refused, since its trials would not
be comparable.

Workers and hosts coordinate through the study lock (``benchmark.core.optuna_store.StudyLock``): set-up (fingerprint,
parent run, best layers) happens once, and each worker starts a trial only while finished plus running trials
are below the target, so the study ends with exactly that many finished trials. A worker with nothing left
to start waits for the running trials: if one was a dead worker's, it is failed once stale and retried.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError
from benchmark.core.faults import caused_by_interrupt, interrupt_on_sigterm
from benchmark.core.optuna_store import StudyLock
from benchmark.core.run_inputs import cache_key_tags, log_inputs, training_inputs
from benchmark.core.study_data import StudyData, open_study_data
from benchmark.core.study_stores import StudyStores, open_stores
from lightning_modules.folds import check_cv_folds
from studies.choice.refit import refit_study
from studies.choice.shift import record_shift
from studies.choice.summary import FINISHED, StudyOutcome, record_result, summarise
from studies.run.fingerprint import check_fingerprint, fingerprint
from studies.run.naming import study_name
from studies.run.orphans import close_orphan_runs
from studies.run.parent_run import WorkersFailed, close_stale_run, fail_parent, parent_run
from studies.run.pruning import make_pruner
from studies.run.retries import SITTING_ATTR, mark_lost_trials, retry_failed
from studies.trials.best_layers import best_layers
from studies.trials.objective import Objective, StudyRuns
from studies.trials.presets import LAST_K, PRESETS, Preset, StudyContext, check_fusions, check_models
from studies.trials.racing import last_k_probe

log = logging.getLogger(__name__)
# Heartbeats, grouped TPE and stale-trial retries are stable in practice but flagged experimental by Optuna.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = ["StudyOutcome", "run_study", "study_name"]


def _open_study(
    cfg: BenchConfig, preset: Preset, ctx: StudyContext, storage: optuna.storages.BaseStorage
) -> optuna.Study:
    study = optuna.create_study(
        study_name=study_name(cfg),
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=preset.sampler(ctx, cfg.train.seed),
        pruner=make_pruner(cfg.study, preset.prune_within),
    )
    if study.metric_names is None:  # optuna-dashboard and trials_dataframe() then say what is maximised
        study.set_metric_names([tracking.OBJECTIVE])
    return study


def _target(preset: Preset, ctx: StudyContext, cfg: BenchConfig) -> int:
    size = preset.grid_size(ctx)
    return size if size is not None else cfg.study.trials


@dataclass
class _Setup:
    """A process's handles on one study."""

    preset: Preset
    ctx: StudyContext
    data: StudyData
    inputs: tuple[Any, ...]  # the dataset inputs (train, validation, test) of every run of the study
    stores: StudyStores
    study: optuna.Study
    lock: StudyLock


def _setup(cfg: BenchConfig) -> _Setup:
    preset = PRESETS.get(cfg.study.preset)
    fusions = check_fusions(cfg.study.fusions)
    if preset.needs_features:
        if not cfg.extract.models:
            raise UserError("no model selected: pass --models a,b (see `layerfuse ls models`)")
        check_models(preset, cfg.extract.models)
    # The door: both stores checked before anything is written (caches' weight hashes, stores, runs), then each
    # split read once and each cache resolved once for every step below.
    data = open_study_data(cfg, cfg.extract.models if preset.needs_features else ())
    if data.dirs:
        train_cache = FeatureCache(next(iter(data.dirs.values())).train)
        labels, label_names = train_cache.labels(), train_cache.label_names
    else:
        labels, label_names = data.train.labels, data.train.label_names
    # Every trial cuts these folds (lightning_modules.folds): refuse impossible ones before a store is written.
    val_fraction = None if cfg.data.val_split else cfg.data.val_fraction
    check_cv_folds(labels, cfg.data.cv_folds, cfg.data.cv_small_classes, label_names, val_fraction)
    inputs = training_inputs(data, cfg.data)
    ctx = StudyContext(
        cfg.extract.dataset,
        cfg.extract.models,
        {m: FeatureCache(d.train).num_layers for m, d in data.dirs.items()},
        fusions=fusions,
        max_k=cfg.study.max_k,
    )
    lock = StudyLock(cfg.study.storage)
    with lock:  # one process at a time creates a fresh database's tables (MLflow's, Optuna's) and the study
        stores = open_stores(cfg.study, cfg.tracking, data.dataset, on_stale=close_stale_run)
        study = _open_study(cfg, preset, ctx, stores.storage)
        check_fingerprint(study, fingerprint(cfg, data))
    return _Setup(preset, ctx, data, inputs, stores, study, lock)


class _InterruptedTrial(logging.Filter):
    """Drop Optuna's "Trial N failed" records of an interrupted trial (Ctrl-C, SIGTERM): the traceback, then the value.

    The command reports the interrupt itself, in one line; the trial's run is closed KILLED and the rerun retries it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: set[str] = set()  # "Trial N": the trials whose traceback record was dropped

    def filter(self, record: logging.LogRecord) -> bool:
        trial = " ".join(record.getMessage().split()[:2])
        if record.exc_info and record.exc_info[1] is not None and caused_by_interrupt(record.exc_info[1]):
            self.interrupted.add(trial)
            return False
        return not (trial in self.interrupted and "failed with value" in record.getMessage())


INTERRUPTED_TRIAL = _InterruptedTrial()


def _objective(s: _Setup, cfg: BenchConfig) -> Objective:
    """The study's objective, with the best layers of the study (read once per study, the same in every worker)."""
    ctx = (
        dataclasses.replace(s.ctx, best_layers=best_layers(s.study, cfg, s.data.dirs))
        if s.preset.needs_best_layers
        else s.ctx
    )
    runs = StudyRuns(
        s.stores.mlc,
        s.stores.experiment_id,
        str(s.study.user_attrs["mlflow_parent_run_id"]),
        s.study.study_name,
        s.preset.name,
        s.inputs,
    )
    return Objective(cfg, s.preset, ctx, s.data, runs)


def _optimize(s: _Setup, cfg: BenchConfig, sitting: dict[str, str]) -> None:
    """One worker: start trials while finished + running trials are below the target, then wait for the running ones.

    ``sitting``: ``tracking.owner_tags()`` of the command (the process that called ``run_study``), on every trial.
    """
    from tqdm.auto import tqdm

    logging.getLogger("optuna.study._optimize").addFilter(INTERRUPTED_TRIAL)  # adding the same filter twice is a no-op

    study, lock = s.study, s.lock
    objective = _objective(s, cfg)

    def start(trial: optuna.Trial) -> float:
        trial.set_user_attr(SITTING_ATTR, sitting)
        lock.release()  # the trial exists and counts as running: other workers may decide now
        return objective(trial)

    target = _target(s.preset, objective.ctx, cfg)
    deadline = None if cfg.study.timeout is None else time.monotonic() + cfg.study.timeout
    poll = max(0.5, min(2.0, cfg.study.heartbeat / 2))
    bar = tqdm(total=target, desc=study.study_name, disable=not (cfg.extract.show_progress and cfg.study.workers == 1))
    waiting = False
    while deadline is None or time.monotonic() < deadline:
        with lock:
            mark_lost_trials(study)  # a killed command's trials: interrupted, not failed, before the stale check
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


def _stop(procs: list[Any]) -> None:
    """Stop workers still running (this process was interrupted or terminated) and wait until they closed their runs."""
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: the worker raises KeyboardInterrupt and closes its trial's run
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()


def _worker(cfg: BenchConfig, sitting: dict[str, str]) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with interrupt_on_sigterm():  # the parent stops its workers with SIGTERM: each closes its trial's run
        s = _setup(cfg)
        try:
            _optimize(s, cfg, sitting)
        except BaseException as err:
            fail_parent(s.stores.mlc, str(s.study.user_attrs["mlflow_parent_run_id"]), err)
            if caused_by_interrupt(err):
                sys.exit(130)  # the command says so in one line; the worker's traceback would bury it
            raise


def run_study(cfg: BenchConfig) -> StudyOutcome:
    """Create or resume the study ``cfg`` describes, run it with ``cfg.study.workers`` processes, and summarise it.

    A worker that raises stops the run: its trial is FAIL (retried on the next run) and the parent run is
    marked FAILED with the error. With ``study.refit`` the chosen trial is then refit on all training rows
    (``studies.choice.refit``; a finished refit of it is reused) and its test accuracy recorded as the study's result.

    Raises:
        UserError: unknown preset/model/dataset, missing caches (with the extract command), too few models,
            a resumed study with different settings, or an unsupported storage URL.
    """
    s = _setup(cfg)
    mlc = s.stores.mlc
    with s.lock:  # once per study, whichever process or host comes first
        parent = parent_run(s.study, mlc, s.stores.experiment_id, cfg, s.data.test.labels)
        close_orphan_runs(s.study, mlc, parent)  # runs a killed worker left unlinked to their trial
        if s.preset.needs_best_layers:
            best_layers(s.study, cfg, s.data.dirs)  # before any trial, so every worker reads the same layers
        if s.preset.name == LAST_K:
            last_k_probe(s.study, cfg, s.data.dirs, s.ctx)  # the candidates worth training, once for every worker
        record_shift(mlc, parent, s.data)  # does validation stand for test: once per parent run
    log_inputs(mlc, parent, s.inputs)  # idempotent: a resumed study's parent run keeps one of each
    tracking.log_run_data(mlc, parent, tags=cache_key_tags(cfg.paths.cache_dir, s.data.dirs))
    try:
        with tracking.system_metrics(parent, cfg.tracking, resume=True):
            sitting = tracking.owner_tags()
            if cfg.study.workers == 1:
                _optimize(s, cfg, sitting)
            else:
                ctx_mp = multiprocessing.get_context("spawn")  # torch and SQLAlchemy do not survive fork
                procs = [
                    ctx_mp.Process(target=_worker, args=(cfg, sitting), name=f"layerfuse-worker-{i}")
                    for i in range(cfg.study.workers)
                ]
                for p in procs:
                    p.start()
                try:
                    for p in procs:
                        p.join()
                finally:
                    _stop(procs)
                bad = [p.exitcode for p in procs if p.exitcode]
                if bad:
                    raise WorkersFailed(
                        f"{len(bad)} of {len(procs)} study workers failed (exit codes {bad}); see their log above"
                    )
        outcome = summarise(s.study, cfg, mlc, parent)
        if cfg.study.refit and outcome.best_number is not None:
            with s.lock:  # one refit per study: a second host waits, then reuses the finished refit run
                refit = refit_study(cfg, outcome.name, trial=outcome.best_number, data=s.data, mlc=mlc)
            outcome = record_result(mlc, outcome, refit.test_acc, refit.run_id)
    except BaseException as err:
        fail_parent(mlc, parent, err)
        raise
    mlc.set_terminated(parent, "FINISHED")
    return outcome
