"""MLflow tracking: the store set-up and the run layout that studies write and reports read back.

Layout (the contract between ``studies`` and ``benchmark.report``):

- One experiment per dataset, ``layerfuse/<dataset>``, so studies on one dataset sit side by side in the UI.
- One parent run per study: run name = study name, tags ``layerfuse.study=<name>``, ``layerfuse.run_kind=study``,
  ``layerfuse.preset``; it holds the study summary (best trial) and the report artifacts. It is FAILED, with
  tag ``layerfuse.error``, when a worker stopped on an error (a rerun resumes it).
- One nested child run per Optuna trial: tags ``mlflow.parentRunId``, ``layerfuse.study``,
  ``layerfuse.run_kind=trial``, ``layerfuse.trial_number``, ``optuna.trial_state`` (COMPLETE, PRUNED, FAIL),
  MLflow's ``mlflow.user``, ``mlflow.source.*`` and ``mlflow.source.git.commit``
  (``version_tags``) and package versions. Params (stable names): ``preset``, ``dataset``, ``models`` (comma list
  of aliases in config order), ``n_models``, ``fusion``, ``layer.<alias>`` (canonical layer spec, e.g. ``16`` or
  ``mean:last4``; for a sweep run, the validation-chosen layer), ``seeds``, and ``train.*`` head settings,
  derived from the trial; and the Optuna params verbatim as ``optuna.<name>`` (e.g. ``optuna.subset``,
  ``optuna.layer.<alias>`` an int, ``optuna.train.hidden``), logged as soon as the trial is planned, so trials
  pruned before training have them too. Tag ``layerfuse.prune_reason`` or ``layerfuse.error`` says why a
  trial was pruned or failed.
  Each configuration is trained once per *unit*, a (fold, seed) pair of ``data.cv_folds`` folds (fold 0 only
  without folds) and ``study.seeds`` seeds, index ``u = fold * seeds + seed``.
  Metrics: ``val/acc``, ``val/f1``, ``test/acc``, ``test/f1`` (mean over units; the trial's value and its
  user attributes ``val_f1``, ``test_acc``, ``test_f1``), ``val/acc_se`` (standard error of ``val/acc`` over
  the units), ``perf/*`` costs (``perf/cuda_peak_mb`` only on CUDA, the largest over units), and per-unit
  histories ``cv/val_acc``, ``seed/val_acc``, ``seed/test_acc`` (step = u); user attribute ``best_epochs`` (each
  unit's stopping epoch). A trial pruned while training has instead the ``val/acc`` values it reported (step =
  epoch). A layer-sweep run also has histories ``sweep/val_acc``, ``sweep/val_acc_se`` and ``sweep/test_acc``
  with step = layer index (MLflow plots them as accuracy by layer), the artifact ``cv/sweep_val_acc.npy``
  (layers x units) and tag ``layerfuse.sweep_model=<alias>``. Artifacts: ``config.yaml`` and
  ``predictions/test_pred_seed<u>.npy`` (predicted test labels in test order, per unit) for paired tests; the
  parent run holds the true labels as ``predictions/test_labels.npy``.
  The parent run's summary names the selection rule (tag ``layerfuse.selection_rule``) and the trials
  tied with the best (``tie_set.json``).
- Every experiment carries ``mlflow.experimentKind=custom_model_development`` so MLflow 3's UI opens its
  model-training view. Study parent runs and trial runs list the splits they use as MLflow dataset inputs
  (name = dataset label, digest = the split's data hash as in the cache key, context ``train``/``validation``/
  ``test``; see ``benchmark.core.run_inputs``) and tag ``layerfuse.cache_key.<model>`` with each model's train
  cache folder (relative to the cache root).
- ``layerfuse fit`` logs one run (``layerfuse.run_kind=fit``; a trial's params, and what a trial logs of its units:
  mean and per-unit metrics, ``val/acc_se``, predictions; ``config.yaml``), ``layerfuse extract`` one run per
  extracted model x split (``extract``; ``perf/*`` costs of the extraction, tag ``layerfuse.cache_key``), and
  ``layerfuse report`` one run per report (``report``; the report files, tag ``layerfuse.report_studies``), which
  each study parent run it covers names in its tag ``layerfuse.report_run_id``. Extract runs and study parent
  runs also hold MLflow system metrics (``system/*``, sampled every ``tracking.system_metrics_interval`` seconds)
  when ``tracking.system_metrics``.
- One child run per refit of a chosen trial (``layerfuse.run_kind=refit``; see ``KIND_REFIT`` below), with the
  train and test splits as dataset inputs; the exported model is logged under it without changing its end time.
- A report run is named as its report folder.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core.config_sections import TrackingConfig
from benchmark.core.faults import caused_by_interrupt

if TYPE_CHECKING:
    import numpy as np
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "layerfuse/"
TAG_STUDY = "layerfuse.study"
TAG_KIND = "layerfuse.run_kind"
TAG_PRESET = "layerfuse.preset"
TAG_TRIAL = "layerfuse.trial_number"
TAG_STATE = "optuna.trial_state"
TAG_SWEEP_MODEL = "layerfuse.sweep_model"
TAG_PARENT = "mlflow.parentRunId"
TAG_ERROR = "layerfuse.error"  # why a trial failed, or (parent run) the error that stopped a worker
TAG_PRUNE_REASON = "layerfuse.prune_reason"
# The process that keeps a run RUNNING: a later command of the same kind on this host closes the run (KILLED) once
# that process is gone (killed with -9, out of memory, the machine rebooted), since nothing else ever would.
TAG_HOST, TAG_PID, TAG_PID_START = "layerfuse.host", "layerfuse.pid", "layerfuse.pid_start"
DEAD_OWNER = "the process running it ({pid} on {host}) died without closing it"
KIND_STUDY = "study"
KIND_TRIAL = "trial"
# Metric names (``split/metric`` for scores, ``perf/*`` for costs): the one spelling studies write and reports read.
TRAIN_LOSS, TRAIN_ACC = "train/loss", "train/acc"
VAL_ACC, VAL_F1, VAL_LOSS, VAL_ACC_BEST = "val/acc", "val/f1", "val/loss", "val/acc_best"
TEST_ACC, TEST_F1 = "test/acc", "test/f1"
METRICS = (VAL_ACC, VAL_F1, TEST_ACC, TEST_F1)
SEED_VAL_ACC, SEED_TEST_ACC = "seed/val_acc", "seed/test_acc"  # per unit (step = u; units = seeds without folds)
SEED_HISTORIES = (SEED_VAL_ACC, SEED_TEST_ACC)
SWEEP_VAL_ACC, SWEEP_TEST_ACC = "sweep/val_acc", "sweep/test_acc"  # per layer of a sweep (step = layer)
SWEEP_HISTORIES = (SWEEP_VAL_ACC, SWEEP_TEST_ACC)
PERF_FIT_S = "perf/fit_s"
PERF_BEST_EPOCH = "perf/best_epoch"
PERF_EPOCHS = "perf/epochs"
PERF_PARAM_COUNT = "perf/param_count"
PERF_HEAD_MS_PER_SAMPLE = "perf/head_ms_per_sample"
PERF_EXTRACT_MS_PER_SAMPLE = "perf/extract_ms_per_sample"
PERF_PEAK_RSS_MB = "perf/peak_rss_mb"
PERF_CUDA_PEAK_MB = "perf/cuda_peak_mb"
PERF_BEST_LAYER = "perf/best_layer"
PERF_LAST_LAYER_VAL_ACC, PERF_LAST_LAYER_TEST_ACC = "perf/last_layer_val_acc", "perf/last_layer_test_acc"
PERF_EXTRACT_S, PERF_TOKENS, PERF_TOKENS_PER_S = "perf/extract_s", "perf/tokens", "perf/tokens_per_s"
PERF_MODEL_LOAD_S = "perf/model_load_s"
PERF_TRAIN_ROWS = "perf/train_rows"  # training rows a refit used (all of train)
STUDY_COMPLETE, STUDY_PRUNED, STUDY_FAILED = "study/complete", "study/pruned", "study/failed"  # parent-run counts
BEST_VAL_ACC, BEST_TEST_ACC, BEST_TRIAL = "best/val_acc", "best/test_acc", "best/trial"  # parent run: the choice
# parent run: the study's result, the test accuracy of its chosen trial refit on all training rows (mean over seeds)
RESULT_TEST_ACC = "result/test_acc"
TAG_RESULT_RUN = "layerfuse.result_run_id"  # parent run: the refit run that RESULT_TEST_ACC comes from
CV_VAL_ACC = "cv/val_acc"
VAL_ACC_SE = "val/acc_se"
SWEEP_VAL_ACC_SE = "sweep/val_acc_se"
SWEEP_UNITS_ARTIFACT = "cv/sweep_val_acc.npy"
TAG_SELECTION_RULE = "layerfuse.selection_rule"  # parent run: the rule that chose its best trial
PERF_FUSED_DIM = "perf/fused_dim"  # with PERF_FEATURE_BYTES, the one-se rule's cost after the number of models
PERF_FEATURE_BYTES = "perf/feature_bytes"
PERF_INFER_GFLOPS = "perf/infer_gflops_per_text"  # computed forward cost of the exported model: one-se's first cost
PERF_INFER_MS = "perf/infer_ms_per_text"  # measured: the whole model's extraction plus the head, per text
SWEEP_GFLOPS = "sweep/infer_gflops_per_text"  # a layer sweep's history, step = layer
ROWS_ARTIFACT = "cv/val_pred.npz"  # a trial's per-unit validation predictions (studies.choice.row_se.ValRows)
SWEEP_ROWS_ARTIFACT = "cv/sweep_val_pred.npz"  # a layer sweep's: one prediction row per layer
# A raced sweep (studies.trials.racing), per layer (step = layer): the ridge probe's out-of-fold accuracy and the units
# the layer's heads trained on (0: the probe dropped it; fewer than all: the race did); the head-epochs it trained.
SWEEP_PROBE_ACC, SWEEP_UNITS_TRAINED = "sweep/probe_acc", "sweep/units_trained"
PERF_HEAD_EPOCHS = "perf/head_epochs"
PROBE_VAL_ACC = "probe/val_acc"  # a last-k trial's candidate: the ridge probe's out-of-fold accuracy
SCREEN_ARTIFACT = "cv/screen.json"  # a raced sweep's per-layer outcome: probe accuracy, units trained, why it stopped
SHIFT_ARTIFACT = "shift.json"  # parent run: does validation stand for test (studies.choice.shift)
SHIFT_AUC = "shift/auc"
TIED_ARTIFACT = "tie_set.json"  # parent run: the trials tied with the best, and the rule
PRED_ARTIFACT = "predictions/test_pred_seed{seed}.npy"
TEST_LABELS_ARTIFACT = "predictions/test_labels.npy"  # on the parent run: true test labels, test order
CONFIG_ARTIFACT = "config.yaml"
OBJECTIVE = VAL_ACC  # what every study maximises (Optuna's metric name too)
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3's model-training view, not its GenAI one
KIND_FIT = "fit"
KIND_EXTRACT = "extract"
KIND_REPORT = "report"
TAG_CACHE_KEY = "layerfuse.cache_key"  # an extract run's cache folder; with ".<model>" on runs that read features
TAG_REPORT_RUN = "layerfuse.report_run_id"  # on a study parent run: the latest report run covering it
TAG_REPORT_STUDIES = "layerfuse.report_studies"  # on a report run: the studies it covers, comma-separated
TAG_REPORT_DIGEST = "layerfuse.report_digest"  # on a report run: hash of its summary.json (an unchanged re-report)
REPORTS_EXPERIMENT = f"{EXPERIMENT_PREFIX}reports"  # report runs covering studies of several experiments
CONTEXT_TRAIN, CONTEXT_VALIDATION, CONTEXT_TEST = "train", "validation", "test"  # MLflow dataset-input contexts
SYSTEM_PREFIX = "system/"  # MLflow's prefix of system metrics
PROCESS_RSS = "process_rss_megabytes"  # system metric of ours: resident memory of the process and its children
EXTRACT_METRICS = {  # meta.json field -> metric of an extract run
    "extract_seconds": PERF_EXTRACT_S,
    "tokens": PERF_TOKENS,
    "tokens_per_s": PERF_TOKENS_PER_S,
    "extract_ms_per_sample": PERF_EXTRACT_MS_PER_SAMPLE,
    "model_load_seconds": PERF_MODEL_LOAD_S,
    "peak_rss_mb": PERF_PEAK_RSS_MB,
    "cuda_peak_mb": PERF_CUDA_PEAK_MB,
}
# Refit of a chosen trial on all rows (studies.choice.refit): a child run of the study's parent run, tagged with
# the trial's run id; params are the trial's plus refit.epochs, metrics test/* and seed/test_acc, test predictions
# under PRED_ARTIFACT, and per seed the head (HEAD_DIR) that an exported model applies.
KIND_REFIT = "refit"
TAG_REFIT_OF = "layerfuse.refit_of"  # the trial run a refit run re-trains
TRIAL_BEST_EPOCHS = "best_epochs"  # Optuna trial user attribute: 0-based best epoch of each fit of the trial
PARAM_REFIT_EPOCHS = "refit.epochs"
HEAD_DIR = "refit/seed{seed}"  # HEAD_NET_FILE, HEAD_SCALERS_FILE, HEAD_JSON of one seed
HEAD_NET_FILE, HEAD_SCALERS_FILE, HEAD_JSON = "net.safetensors", "scalers.npz", "head.json"  # also in the model
STUDY_SUMMARY_ARTIFACT = "study_summary.json"  # parent run: the study's outcome
MODEL_ARTIFACT = "model"  # the exported MLflow pyfunc model, logged under the refit run


def experiment_name(dataset: str) -> str:
    """The experiment holding every study on ``dataset`` (a file or folder dataset is named by its slug)."""
    from benchmark.core.text_data import dataset_label

    return f"{EXPERIMENT_PREFIX}{dataset_label(dataset)}"


def _sqlite_parent(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent
    return None


def client(tracking: TrackingConfig) -> MlflowClient:
    """An ``MlflowClient`` on the configured store (creating the folder of a SQLite file, and a fresh store's tables).

    MLflow creates a new SQLite store's tables (alembic migrations) on first use; two commands doing that at once on
    one file fail ("table already exists"). A file lock beside the database lets one process set the store up while
    the other waits; a store whose folder this process cannot write is used without the lock (only read).
    """
    import fcntl

    import mlflow
    from mlflow.tracking import MlflowClient

    parent = _sqlite_parent(tracking.uri)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking.uri)
    if parent is None:
        return MlflowClient(tracking_uri=tracking.uri)
    try:
        lock = open(f"{tracking.uri.removeprefix('sqlite:///')}.setup-lock", "a")  # noqa: SIM115 - closed below
    except OSError:
        lock = None
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        mlc = MlflowClient(tracking_uri=tracking.uri)
        mlc.search_experiments(max_results=1)  # the store, and a fresh one's tables, exist after the first call
    finally:
        if lock is not None:
            lock.close()  # closing drops the flock
    return mlc


def ensure_experiment(mlc: MlflowClient, name: str, tracking: TrackingConfig) -> str:
    """Id of experiment ``name``, created with its artifacts under ``tracking.artifact_root`` if new."""
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:  # an experiment made before the kind was set
            mlc.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        return str(exp.experiment_id)
    location = None
    if "://" not in tracking.artifact_root or tracking.artifact_root.startswith("file:"):
        folder = Path(tracking.artifact_root.removeprefix("file://")).resolve() / name.replace("/", "_")
        location = folder.as_uri()  # created by the first artifact (extract runs have none)
    else:
        location = f"{tracking.artifact_root.rstrip('/')}/{name.replace('/', '_')}"
    try:
        return str(mlc.create_experiment(name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}))
    except Exception:  # noqa: BLE001 - another worker created it first (RESOURCE_ALREADY_EXISTS)
        exp = mlc.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


ARTIFACT_BARS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def artifact_bars(show: bool) -> Iterator[None]:
    """Leave MLflow's artifact download bars on when ``show``, else turn them off for the block.

    MLflow reads the variable at each download, and study workers inherit it, so one switch covers a whole command
    (``--no-progress``: a resumed study or a report downloads one artifact per trial, each with its own bar).
    """
    if show:
        yield
        return
    before = os.environ.get(ARTIFACT_BARS_ENV)
    os.environ[ARTIFACT_BARS_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ARTIFACT_BARS_ENV, None)
        else:
            os.environ[ARTIFACT_BARS_ENV] = before


@contextmanager
def system_metrics(run_id: str, tracking: TrackingConfig, resume: bool = False) -> Iterator[None]:
    """MLflow's system metrics (``system/*``: CPU, memory, GPU where there is one, this process's RSS) on a run.

    Sampled every ``tracking.system_metrics_interval`` seconds in a thread while the block runs (nothing when
    ``tracking.system_metrics`` is off); ``resume`` continues the steps of a run reopened by a rerun.
    """
    if not tracking.system_metrics:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from benchmark.core.process_monitor import ProcessMonitor

    monitor = SystemMetricsMonitor(  # type: ignore[no-untyped-call]
        run_id,
        sampling_interval=tracking.system_metrics_interval,
        resume_logging=resume,
        node_id=tracking.system_metrics_node or None,  # hosts of one study each log their own system/<node>/*
        tracking_uri=tracking.uri,
    )
    monitor.monitors.append(ProcessMonitor(PROCESS_RSS))
    monitor.start()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        monitor.finish()  # type: ignore[no-untyped-call]


@contextmanager
def tracked_run(
    mlc: MlflowClient,
    experiment_id: str,
    run_name: str,
    kind: str,
    tracking: TrackingConfig,
    tags: Mapping[str, str] | None = None,
    with_system_metrics: bool = False,
) -> Iterator[str]:
    """A run of ``kind`` (tags: run kind, versions, ``tags``) for the block; yields its id.

    The run ends FINISHED, or FAILED (KILLED on Ctrl-C or SIGTERM) with tag ``layerfuse.error`` when the block
    raises. Runs of ``kind`` that a dead process left RUNNING are closed first (``close_dead_runs``).
    """
    close_dead_runs(mlc, experiment_id, kind)
    run = mlc.create_run(
        experiment_id, run_name=run_name, tags={TAG_KIND: kind, **version_tags(), **owner_tags(), **(tags or {})}
    )
    run_id = str(run.info.run_id)
    try:
        with system_metrics(run_id, tracking) if with_system_metrics else nullcontext():
            yield run_id
    except BaseException as err:
        end_on_error(mlc, run_id, err)
        raise
    mlc.set_terminated(run_id, "FINISHED")


def end_on_error(mlc: MlflowClient, run_id: str, err: BaseException, record: bool = True) -> None:
    """End a run whose work raised ``err``: KILLED for an interrupt (Ctrl-C, SIGTERM), else FAILED.

    With ``record`` the error goes to tag ``layerfuse.error`` (a caller keeping an earlier error passes False).
    """
    if record:
        log_run_data(mlc, run_id, tags={TAG_ERROR: f"{type(err).__name__}: {err}"[:5000]})
    mlc.set_terminated(run_id, "KILLED" if caused_by_interrupt(err) else "FAILED")


def owner_tags() -> dict[str, str]:
    """Tags naming this process (host, pid, start time) as the one that keeps a run RUNNING."""
    import psutil

    from benchmark.core.faults import HOST

    return {TAG_HOST: HOST, TAG_PID: str(os.getpid()), TAG_PID_START: f"{psutil.Process().create_time():.2f}"}


def owner_alive(tags: Mapping[str, str]) -> bool:
    """False only when the run's process is known to be gone: on this host, and no process with that pid and start."""
    import psutil

    from benchmark.core.faults import HOST

    pid = tags.get(TAG_PID, "")
    if tags.get(TAG_HOST) != HOST or not pid.isdigit():
        return True  # another host's process, or a run from before these tags: not ours to judge
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    recorded = tags.get(TAG_PID_START, "")
    return not recorded or abs(started - float(recorded)) < 1.0  # a reused pid is another process


def close_dead_runs(mlc: MlflowClient, experiment_id: str, kind: str) -> int:
    """Close (KILLED, tag ``layerfuse.error``) the runs of ``kind`` left RUNNING by dead processes; return how many."""
    query = f"tags.`{TAG_KIND}` = '{kind}' AND attributes.status = 'RUNNING'"
    closed = 0
    for run in mlc.search_runs([experiment_id], query, max_results=1000):
        tags = run.data.tags
        if owner_alive(tags):
            continue
        reason = DEAD_OWNER.format(pid=tags.get(TAG_PID), host=tags.get(TAG_HOST))
        log_run_data(mlc, run.info.run_id, tags={TAG_ERROR: reason})
        mlc.set_terminated(run.info.run_id, "KILLED")
        log.warning("closed the %s run %s (%s): %s", kind, run.info.run_id, run.info.run_name, reason)
        closed += 1
    return closed


def git_commit() -> str | None:
    """The commit of the checkout this code runs from (MLflow's own git helper), or None outside a checkout."""
    from mlflow.utils.git_utils import get_git_commit

    return get_git_commit(str(Path(__file__).resolve().parent))


@lru_cache(maxsize=1)
def version_tags() -> dict[str, str]:
    """The tags every run gets: MLflow's source, user and git tags, and ``version.<package>``.

    MLflow's run-context registry gives ``mlflow.user``, ``mlflow.source.name`` (the command's entry point) and
    ``mlflow.source.type``, as ``mlflow.start_run`` would; ``mlflow.source.git.commit`` is taken from where this
    code lives, not from the entry point (a console script in the venv is outside the checkout), and is left out
    when the code does not run from a git checkout.
    """
    import importlib.metadata as md

    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    tags = {k: str(v) for k, v in resolve_tags().items() if k.startswith("mlflow.")}
    commit = git_commit()
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    for pkg in ("layerfuse", "torch", "lightning", "transformers", "optuna", "mlflow"):
        try:
            tags[f"version.{pkg}"] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return tags


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}`` strings (lists joined by commas) for MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


def log_run_data(
    mlc: MlflowClient,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    histories: Mapping[str, list[float] | Mapping[int, float]] | None = None,
    step: int = 0,
) -> None:
    """Log params, final metrics, tags and step histories in one batch call.

    A history is a list (step = index) or a mapping (step -> value). ``metrics`` are logged at ``step``: a run
    whose learning curves hold epochs ``0..E-1`` logs its final scores at step ``E``, so they are the latest.
    """
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    for name, values in (histories or {}).items():
        steps = values.items() if isinstance(values, Mapping) else enumerate(values)
        metric_list += [Metric(name, float(v), now, int(step)) for step, v in steps]
    mlc.log_batch(
        run_id,
        metrics=metric_list,
        params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def log_text(mlc: MlflowClient, run_id: str, text: str, artifact_file: str) -> None:
    """Store ``text`` as an artifact file of the run."""
    mlc.log_text(run_id, text, artifact_file)


def log_array(mlc: MlflowClient, run_id: str, array: np.ndarray, artifact_file: str) -> None:
    """Store a numpy array as an ``.npy`` artifact of the run."""
    import tempfile

    import numpy as np

    path = Path(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / path.name
        buf = io.BytesIO()
        np.save(buf, array)
        local.write_bytes(buf.getvalue())
        mlc.log_artifact(run_id, str(local), str(path.parent) if str(path.parent) != "." else None)
