"""Retries of failed trials: errors use up a budget of MAX_RETRY, interruptions (Ctrl-C, SIGTERM) do not."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from studies.run.retries import MAX_RETRY, retry_failed
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
