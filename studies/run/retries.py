"""Retries of failed trials, with their params.

``retry_failed`` re-enqueues a failed trial (killed worker or raised error), at most ``MAX_RETRY`` times; the runner
calls it under the study lock, so two workers never retry one trial twice. An attempt that was interrupted
(Ctrl-C, SIGTERM) is not a failure of the trial: it is retried however often a long study is stopped and resumed.
Nor is an attempt whose whole command was killed (SIGKILL, a machine gone): ``mark_lost_trials`` finds it by its
command's process, gone from this host, and marks it interrupted before the stale check fails it. A worker killed
while its command lives (the OOM killer picks the largest process) is the trial's failure and uses up the budget.
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from benchmark.core import tracking
from studies.trials.objective import INTERRUPTED_ATTR

log = logging.getLogger(__name__)

MAX_RETRY = 2  # retries of one failed trial (killed worker or raised error)
GRID_ATTRS = ("grid_id", "search_space")  # a retried grid trial keeps its grid point
SITTING_ATTR = "sitting"  # a trial's user attribute: ``tracking.owner_tags()`` of the command that runs it


def mark_lost_trials(study: optuna.Study) -> list[int]:
    """Mark interrupted the RUNNING trials whose command's process is gone from this host; return their numbers.

    They were lost with their command, so their retry does not use up the trial's budget. Another host's command is
    not judged (``tracking.owner_alive``): its trials fail by the heartbeat and count as failures.
    """
    lost = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(SITTING_ATTR)
        if t.user_attrs.get(INTERRUPTED_ATTR) or not isinstance(owner, dict) or tracking.owner_alive(owner):
            continue
        # Optuna's API sets attributes through a live Trial only; this one's process is gone.
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED_ATTR, True)
        log.info(
            "trial %d of %s was running in a command that is gone (pid %s): its retry is not counted as a failure",
            t.number,
            study.study_name,
            owner.get(tracking.TAG_PID),
        )
        lost.append(t.number)
    return lost


def retry_failed(study: optuna.Study, max_retry: int = MAX_RETRY) -> int | None:
    """Enqueue a retry of the oldest failed trial not retried yet, with its params; return its number (None: none).

    The retry records the original trial in user attributes ``retry_of`` and ``retry`` (1, 2, ...) and, as
    Optuna's ``RetryHeartbeatStaleTrialCallback`` does, in system attributes ``failed_trial`` and
    ``retry_history`` (every earlier attempt); a grid trial keeps its grid point. A trial whose attempts failed
    ``max_retry`` + 1 times, interrupted attempts not counted, is given up (logged).
    """
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    interrupted = {t.number for t in trials if t.user_attrs.get(INTERRUPTED_ATTR)}
    for t in trials:
        if t.state != TrialState.FAIL or t.number in retried:
            continue
        history = [*t.system_attrs.get("retry_history", ()), t.number]
        failures = [n for n in history if n not in interrupted]
        if len(failures) > max_retry:
            log.debug("trial %d failed after %d retries: not retried again", t.number, max_retry)
            continue
        system = {k: v for k, v in t.system_attrs.items() if k in GRID_ATTRS}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=t.params,
                distributions=t.distributions,
                user_attrs={"retry_of": history[0], "retry": len(history)},
                system_attrs={**system, "failed_trial": history[0], "retry_history": history},
            )
        )
        if t.number in interrupted:
            log.info(
                "trial %d of %s was interrupted: running it again with the same params", t.number, study.study_name
            )
        else:
            log.warning(
                "trial %d of %s failed: retrying it with the same params (retry %d of %d)",
                t.number,
                study.study_name,
                len(failures),
                max_retry,
            )
        return t.number
    return None
