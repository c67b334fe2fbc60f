"""Close trial runs left RUNNING by a worker killed between creating a trial's MLflow run and linking it.

``Objective`` creates each trial's run tagged with the study and trial number, then stores the run id on the
Optuna trial. A worker killed in between leaves a run that no trial names: the stale-trial callback cannot find
it by id, so it would stay RUNNING forever. These functions find such runs by their tags instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from benchmark.core import tracking
from studies.trials.objective import StudyRuns, finish_run

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

ORPHAN_REASON = "worker died before the run was linked to its trial"
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)


def running_trial_runs(mlc: MlflowClient, parent_run_id: str, number: int | None = None) -> list[Any]:
    """The study's trial runs still RUNNING in MLflow (only trial ``number``'s when given)."""
    experiment_id = mlc.get_run(parent_run_id).info.experiment_id
    # The parent run is the study's own: no filter on the study's name, which may hold any character (a quote).
    query = (
        f"tags.`{tracking.TAG_PARENT}` = '{parent_run_id}' "
        f"AND tags.`{tracking.TAG_KIND}` = '{tracking.KIND_TRIAL}' AND attributes.status = 'RUNNING'"
    )
    if number is not None:
        query += f" AND tags.`{tracking.TAG_TRIAL}` = '{number}'"
    runs: list[Any] = []
    token = None
    while True:
        page = mlc.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def close_orphan_runs(study: optuna.Study, mlc: MlflowClient, parent_run_id: str) -> int:
    """Close every RUNNING trial run of ``study`` whose trial is no longer running; returns how many.

    Each is closed FAILED with Optuna state FAIL: its trial failed when the worker died (or the run is a duplicate
    that no trial names), and a retry gets a run of its own. Runs of trials that are still running (here or in
    another worker) are left alone.
    """
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    runs = StudyRuns(mlc, "", parent_run_id, study.study_name, "")
    closed = 0
    for run in running_trial_runs(mlc, parent_run_id):
        tag = run.data.tags.get(tracking.TAG_TRIAL, "")
        state = states.get(int(tag)) if tag.isdigit() else None
        if state in ACTIVE:
            continue
        finish_run(runs, run.info.run_id, "FAIL", ORPHAN_REASON)
        closed += 1
        log.warning(
            "%s: closed the orphaned run %s of trial %s (%s)", study.study_name, run.info.run_id, tag, ORPHAN_REASON
        )
    return closed
