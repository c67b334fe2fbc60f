"""Retries of failed trials: errors use up a budget of MAX_RETRY, interruptions (Ctrl-C, SIGTERM, a killed command)
do not."""

from __future__ import annotations

import subprocess
import sys

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from benchmark.core import tracking
from studies.run.retries import MAX_RETRY, SITTING_ATTR, mark_lost_trials, retry_failed
from studies.trials.objective import INTERRUPTED_ATTR


def _attempt(study: optuna.Study, interrupted: bool) -> optuna.Trial:
    """Run the next trial (a waiting retry first) and let it fail, by an interruption or by an error."""
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    if interrupted:
        trial.set_user_attr(INTERRUPTED_ATTR, True)  # what the objective records on KeyboardInterrupt
    study.tell(trial, state=TrialState.FAIL)
    return trial


def test_an_interrupted_trial_is_rerun_however_often_and_an_erring_one_is_given_up() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    first = _attempt(study, interrupted=True)
    for _ in range(2 * MAX_RETRY + 2):  # a long study stopped and resumed more often than the budget
        assert retry_failed(study) is not None
        again = _attempt(study, interrupted=True)
        assert again.params == first.params  # the same trial, run again
    assert study.trials[-1].user_attrs["retry_of"] == first.number

    # The same trial now fails by errors: its first error and MAX_RETRY retries of it, then it is given up.
    for _ in range(MAX_RETRY + 1):
        assert retry_failed(study) is not None
        assert _attempt(study, interrupted=False).params == first.params
    assert retry_failed(study) is None
    history = [*study.trials[-1].system_attrs["retry_history"], study.trials[-1].number]
    assert sum(not study.trials[n].user_attrs.get(INTERRUPTED_ATTR) for n in history) == MAX_RETRY + 1


def test_a_trial_lost_with_its_command_is_marked_interrupted_and_others_are_not() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    gone = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE, text=True)
    gone.communicate(timeout=60)  # a process that ran on this host and has exited
    dead = {**tracking.owner_tags(), tracking.TAG_PID: str(gone.pid)}
    owners = {
        "dead": dead,
        "alive": tracking.owner_tags(),  # this process: a worker of a live command
        "elsewhere": {**dead, tracking.TAG_HOST: "another-host"},  # not ours to judge
        "untagged": None,  # a trial from before sittings were recorded
    }
    trials = {}
    for name, owner in owners.items():
        trials[name] = study.ask({"x": FloatDistribution(0.0, 1.0)})
        if owner is not None:
            trials[name].set_user_attr(SITTING_ATTR, owner)
    assert mark_lost_trials(study) == [trials["dead"].number]
    assert mark_lost_trials(study) == []  # marked once
    marked = {name: study.trials[t.number].user_attrs.get(INTERRUPTED_ATTR) for name, t in trials.items()}
    assert marked == {"dead": True, "alive": None, "elsewhere": None, "untagged": None}

    # The lost trial, failed by the stale check, is retried however often its command is killed.
    study.tell(trials["dead"], state=TrialState.FAIL)
    for _ in range(2 * MAX_RETRY + 2):
        assert retry_failed(study) is not None
        again = study.ask({"x": FloatDistribution(0.0, 1.0)})
        assert again.params == trials["dead"].params
        again.set_user_attr(SITTING_ATTR, dead)
        assert mark_lost_trials(study) == [again.number]
        study.tell(again, state=TrialState.FAIL)
    history = study.trials[-1].system_attrs["retry_history"]
    assert len(history) == 2 * MAX_RETRY + 2 and history[0] == trials["dead"].number
