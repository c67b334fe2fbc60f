"""A study's MLflow parent run: created once, reopened on resume, marked FAILED with the error that stopped a worker."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import optuna

from benchmark.core import tracking
from benchmark.core.config import BenchConfig
from studies.run.naming import models_used
from studies.run.orphans import close_orphan_runs
from studies.trials.objective import StudyRuns, finish_run

log = logging.getLogger(__name__)


class WorkersFailed(RuntimeError):
    """Worker processes exited with an error (each recorded its own on the parent run)."""


def parent_run(study: optuna.Study, mlc: Any, experiment_id: str, cfg: BenchConfig, test_labels: np.ndarray) -> str:
    """The study's parent run: created by the first process (under the study lock), reopened by later ones.

    A new one holds ``test_labels``, which the reports score every trial's predictions against.
    """
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    models = ",".join(models_used(cfg))
    tracking.close_dead_runs(mlc, experiment_id, tracking.KIND_STUDY)  # other studies' runs their killed processes left
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
                **tracking.owner_tags(),
            },
        )
        run_id = run.info.run_id
        tracking.log_run_data(
            mlc,
            run_id,
            params={
                "preset": cfg.study.preset,
                "dataset": cfg.extract.dataset,
                "models": models,
                "seeds": cfg.study.seeds,
            },
        )
        tracking.log_array(mlc, run_id, test_labels, tracking.TEST_LABELS_ARTIFACT)
        study.set_user_attr("mlflow_parent_run_id", run_id)
    else:
        mlc.update_run(run_id, status="RUNNING")
        tracking.log_run_data(mlc, run_id, tags=tracking.owner_tags())  # this process keeps it RUNNING now
        if (
            tracking.TAG_ERROR in mlc.get_run(run_id).data.tags
        ):  # the previous attempt's error; this attempt starts clean
            mlc.delete_tag(run_id, tracking.TAG_ERROR)
    return str(run_id)


def fail_parent(mlc: Any, run_id: str, err: BaseException) -> None:
    """Mark the parent run FAILED (KILLED on Ctrl-C) with the error, keeping the first error a worker recorded."""
    first = not isinstance(err, WorkersFailed) or tracking.TAG_ERROR not in mlc.get_run(run_id).data.tags
    tracking.end_on_error(mlc, run_id, err, record=first)


def close_stale_run(mlc: Any) -> Any:
    """The storage callback that closes a dead worker's trial run as FAILED when Optuna fails its trial."""

    def close(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        log.warning(
            "trial %d of %s lost its worker (no heartbeat): marked FAIL, to be retried", trial.number, study.study_name
        )
        if run_id:
            finish_run(StudyRuns(mlc, "", "", study.study_name, ""), run_id, "FAIL", "worker died (heartbeat lost)")
        else:  # killed before the trial named its run: find the run by its tags
            close_orphan_runs(study, mlc, str(study.user_attrs["mlflow_parent_run_id"]))

    return close
