"""``make_pruner``: the study's pruner, with grid presets' trials judged only against their own group.

Optuna's median pruner compares a trial with every completed trial at the same epoch. In a grid of model pairs x
fusion methods that prunes a weak pair's cells wholesale once a strong pair has set the median (seen: 2 of 6 pairs
on MR, 1 of 6 on SST-2 and R8 finished no fusion at all), so the "fusion chosen per pair" table lost whole
pairs. ``GroupedPruner`` hands the inner pruner a view of the study holding only the trials that share the
grouping params (``Preset.prune_within``: the pair, or the model of a last-k cell), so each pair keeps its own
start-up trials and its own median.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial, TrialState

    from benchmark.core.config_sections import StudyConfig

# A trial is judged from its 6th epoch on, and the median needs 5 completed trials to compare with.
WARMUP_EPOCHS = 5
STARTUP_TRIALS = 5


class _GroupView:
    """The study as the inner pruner sees it: ``get_trials`` keeps only the trials of one group."""

    def __init__(self, study: optuna.Study, keys: Sequence[str], group: tuple[Any, ...]) -> None:
        self._study, self._keys, self._group = study, keys, group

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if _group_of(t, self._keys) == self._group]

    def __getattr__(self, name: str) -> Any:  # direction, study_name, ...: the study's own
        return getattr(self._study, name)


def _group_of(trial: FrozenTrial, keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(trial.params.get(k) for k in keys)


class GroupedPruner(optuna.pruners.BasePruner):
    """Prunes as ``inner`` would if the study held only the trials with the same ``keys`` params as the judged one.

    Args:
        inner: The pruner that decides (e.g. a median pruner).
        keys: Param names that form a group; a trial missing one is grouped with the others missing it.
    """

    def __init__(self, inner: optuna.pruners.BasePruner, keys: Sequence[str]) -> None:
        self.inner, self.keys = inner, tuple(keys)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether the inner pruner prunes ``trial`` among the trials of its own group."""
        view = _GroupView(study, self.keys, _group_of(trial, self.keys))
        return self.inner.prune(view, trial)  # type: ignore[arg-type]  # duck-typed: the pruner reads get_trials/direction


def make_pruner(study: StudyConfig, within: Sequence[str] = ()) -> optuna.pruners.BasePruner:
    """``study.pruner``: median (within the groups of ``within`` params, when given) or threshold:X on ``val/acc``.

    A threshold is absolute, so grouping would not change it; the median is relative to the trials compared.
    """
    if not study.pruning:
        return optuna.pruners.NopPruner()
    if study.pruner == "median":
        median = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS)
        return GroupedPruner(median, within) if within else median
    return optuna.pruners.ThresholdPruner(lower=float(study.pruner.partition(":")[2]), n_warmup_steps=WARMUP_EPOCHS)
