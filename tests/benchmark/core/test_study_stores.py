"""A study's stores, opened once at its door: the MLflow client and experiment, the Optuna storage with heartbeats."""

from __future__ import annotations

import optuna
import pytest

from benchmark.core import tracking
from benchmark.core.config import load_config
from benchmark.core.optuna_store import HeartbeatJournalStorage
from benchmark.core.study_stores import open_stores


def _cfg(tmp_path, storage: str):
    return load_config(
        env={},
        **{
            "study.storage": storage,
            "study.heartbeat": 2.0,
            "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
            "tracking.artifact_root": str(tmp_path / "artifacts"),
        },
    )


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_open_stores_gives_the_experiment_and_a_storage_whose_stale_callback_has_the_client(tmp_path, kind) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db" if kind == "sqlite" else f"journal:{tmp_path}/study.log"
    cfg = _cfg(tmp_path, url)
    given: list[object] = []

    def on_stale(mlc):
        given.append(mlc)
        return lambda study, trial: None

    stores = open_stores(cfg.study, cfg.tracking, "data/My Set", on_stale=on_stale)
    assert given == [stores.mlc]  # the callback closes runs through the study's own client
    assert stores.storage.get_heartbeat_stale_trial_callback() is not None
    assert stores.storage.get_heartbeat_interval() == 2
    assert isinstance(stores.storage, HeartbeatJournalStorage if kind == "journal" else optuna.storages.RDBStorage)
    exp = stores.mlc.get_experiment_by_name(tracking.experiment_name("data/My Set"))
    assert exp is not None and exp.experiment_id == stores.experiment_id
    assert exp.artifact_location == (tmp_path / "artifacts" / exp.name.replace("/", "_")).resolve().as_uri()
    study = optuna.create_study(study_name="s", storage=stores.storage)
    assert study.study_name in optuna.get_all_study_names(stores.storage)

    again = open_stores(cfg.study, cfg.tracking, "data/My Set")  # a second process: the same experiment
    assert again.experiment_id == stores.experiment_id
    assert again.storage.get_heartbeat_stale_trial_callback() is None
