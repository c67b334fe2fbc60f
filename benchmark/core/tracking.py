"""MLflow tracking: the store set-up and the run layout that studies write and reports read back.

Layout (the contract between ``studies`` and ``benchmark.report``):

- One experiment per dataset, ``layerfuse/<dataset>``, so studies on one dataset sit side by side in the UI.
- One parent run per study: run name = study name, tags ``layerfuse.study=<name>``, ``layerfuse.run_kind=study``,
  ``layerfuse.preset``; it holds the study summary (best trial) and the report artifacts. It is FAILED, with
  tag ``layerfuse.error``, when a worker stopped on an error (a rerun resumes it).
- One nested child run per Optuna trial: tags ``mlflow.parentRunId``, ``layerfuse.study``,
  ``layerfuse.run_kind=trial``, ``layerfuse.trial_number``, ``optuna.trial_state`` (COMPLETE, PRUNED, FAIL),
  ``git_commit`` and package versions. Params (stable names): ``preset``, ``dataset``, ``models`` (comma list
  of aliases in config order), ``n_models``, ``fusion``, ``layer.<alias>`` (canonical layer spec, e.g. ``16`` or
  ``mean:last4``; for a sweep run, the validation-chosen layer), ``seeds``, and ``train.*`` head settings,
  derived from the trial; and the Optuna params verbatim as ``optuna.<name>`` (e.g. ``optuna.use.<alias>``,
  ``optuna.layer.<alias>`` an int, ``optuna.train.hidden``), logged as soon as the trial is planned, so trials
  pruned before training have them too. Tag ``layerfuse.prune_reason`` or ``layerfuse.error`` says why a
  trial was pruned or failed.
  Metrics: ``val/acc``, ``val/f1``, ``test/acc``, ``test/f1`` (mean over seeds; the trial's value and its
  user attributes ``val_f1``, ``test_acc``, ``test_f1``), ``perf/*`` costs (``perf/cuda_peak_mb`` only on CUDA,
  the largest over seeds), and per-seed histories ``seed/val_acc``, ``seed/test_acc`` (step = seed index). A
  trial pruned while training has instead the ``val/acc`` values it reported (step = epoch). A layer-sweep run
  also has histories ``sweep/val_acc`` and ``sweep/test_acc`` with step = layer index (MLflow plots them as
  accuracy by layer), tag ``layerfuse.sweep_model=<alias>``. Artifacts: ``config.yaml`` and ``predictions/test_pred_seed<k>.npy``
  (predicted test labels in test order) for paired tests; the parent run holds the true labels as
  ``predictions/test_labels.npy``.
- One child run per refit of a chosen trial (``layerfuse.run_kind=refit``; see ``KIND_REFIT`` below).
"""

from __future__ import annotations

import io
import logging
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core.config import TrackingConfig

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
BASELINE_PRESET = "tfidf-baseline"  # trials of this preset are the lexical baseline that reports compare against
KIND_STUDY = "study"
KIND_TRIAL = "trial"
METRICS = ("val/acc", "val/f1", "test/acc", "test/f1")
SEED_HISTORIES = ("seed/val_acc", "seed/test_acc")
SWEEP_HISTORIES = ("sweep/val_acc", "sweep/test_acc")
PRED_ARTIFACT = "predictions/test_pred_seed{seed}.npy"
TEST_LABELS_ARTIFACT = "predictions/test_labels.npy"  # on the parent run: true test labels, test order
CONFIG_ARTIFACT = "config.yaml"
# Refit of a chosen trial on all training rows (studies.refit): a child run of the study's parent run, tagged with
# the trial's run id; params are the trial's plus refit.epochs, metrics test/* and seed/test_acc, test predictions
# under PRED_ARTIFACT, and per seed the head (HEAD_DIR) that an exported model applies.
KIND_REFIT = "refit"
TAG_REFIT_OF = "layerfuse.refit_of"  # the trial run a refit run re-trains
TRIAL_BEST_EPOCHS = "best_epochs"  # Optuna trial user attribute: 0-based best epoch of each fit of the trial
PARAM_REFIT_EPOCHS = "refit.epochs"
METRIC_TRAIN_ROWS = "perf/train_rows"  # training rows a refit used (all of train)
SEED_TEST_ACC = SEED_HISTORIES[1]
TAG_RUN_ERROR = "layerfuse.error"
HEAD_DIR = "refit/seed{seed}"  # net.safetensors, scalers.npz, head.json
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
    """An ``MlflowClient`` on the configured store (creating the folder of a SQLite file)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    parent = _sqlite_parent(tracking.uri)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking.uri)
    return MlflowClient(tracking_uri=tracking.uri)


def ensure_experiment(mlc: MlflowClient, name: str, tracking: TrackingConfig) -> str:
    """Id of experiment ``name``, created with its artifacts under ``tracking.artifact_root`` if new."""
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if "://" not in tracking.artifact_root or tracking.artifact_root.startswith("file:"):
        folder = Path(tracking.artifact_root.removeprefix("file://")).resolve() / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    else:
        location = f"{tracking.artifact_root.rstrip('/')}/{name.replace('/', '_')}"
    try:
        return str(mlc.create_experiment(name, artifact_location=location))
    except Exception:  # noqa: BLE001 - another worker created it first (RESOURCE_ALREADY_EXISTS)
        exp = mlc.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The repository's HEAD commit, or ``unknown`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


@lru_cache(maxsize=1)
def version_tags() -> dict[str, str]:
    """``git_commit`` and ``version.<package>`` tags for every run."""
    import importlib.metadata as md

    tags = {"git_commit": git_commit()}
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
) -> None:
    """Log params, final metrics, tags and step histories (a list: step = index; a mapping: step -> value) in one batch call."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metric_list = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
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
