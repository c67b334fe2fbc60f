"""``TrialSeededSampler``: a sampler re-seeded for every trial from the study seed and the trial's number.

A sampler seeded once per process replays itself: a resumed study (a new process), a second ``--workers``
process or a second host builds the same seeded sampler and proposes the very start-up params the first one
did (seen: trials 3-5 repeated trials 0-2). Trial numbers are unique within a study, so drawing trial ``n``
from ``SeedSequence([seed, n])`` gives every trial its own draws, wherever it runs, while a fresh study with one
worker stays reproducible (its trial ``n`` always sees the same seed and the same history).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.samplers import BaseSampler

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` in a study seeded ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates to ``make(trial_seed(seed, trial.number))``, a sampler built afresh as each trial starts.

    Only for samplers whose state between trials is their random generator (TPE, random): the history they
    learn from is read from the study. Not for ``GridSampler``, whose seed orders the grid and must be the
    same in every process.

    Args:
        make: Builds the inner sampler from a seed.
        seed: The study seed (``train.seed``).
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Build this trial's sampler (Optuna calls this first for every trial)."""
        self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """As the inner sampler."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """As the inner sampler."""
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """As the inner sampler."""
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """As the inner sampler."""
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """As the inner sampler (the next trial is seeded from its number again)."""
        self._inner.reseed_rng()
