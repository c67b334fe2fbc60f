"""Where a study records, opened once where its command starts: the MLflow client and experiment, the Optuna storage.

The runner opens them under the study lock (a fresh database's tables are created by one process at a time) and
hands them down; the steps below take the client or the storage they write to instead of opening their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.core.config_sections import StudyConfig, TrackingConfig
from benchmark.core.optuna_store import make_storage

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import FrozenTrial

StaleCallback = Callable[["optuna.Study", "FrozenTrial"], None]


@dataclass(frozen=True)
class StudyStores:
    """A study's MLflow client, the id of its dataset's experiment and its Optuna storage (with heartbeats)."""

    mlc: MlflowClient
    experiment_id: str
    storage: optuna.storages.BaseStorage


def open_stores(
    study: StudyConfig,
    tracking_cfg: TrackingConfig,
    dataset: str,
    on_stale: Callable[[MlflowClient], StaleCallback] | None = None,
) -> StudyStores:
    """The stores of a study on ``dataset``: its experiment created if new, its storage opened.

    Args:
        study: ``study.storage`` and ``study.heartbeat``.
        tracking_cfg: The MLflow store and the artifact root of a new experiment.
        dataset: The dataset as configured (its experiment is named after it).
        on_stale: Given the client, the callback for a trial whose worker died (it closes the trial's run).
    """
    mlc = tracking.client(tracking_cfg)
    experiment_id = tracking.ensure_experiment(mlc, tracking.experiment_name(dataset), tracking_cfg)
    storage = make_storage(study.storage, study.heartbeat, on_stale=on_stale(mlc) if on_stale else None)
    return StudyStores(mlc, experiment_id, storage)
