"""A study's outcome: trial counts and the selected trial, recorded on the parent run."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from benchmark.core import tracking
from benchmark.core.config import BenchConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class StudyOutcome:
    """The state of a study after ``run_study``."""

    name: str
    storage: str
    experiment: str
    parent_run_id: str
    complete: int
    pruned: int
    failed: int
    best_number: int | None
    best_value: float | None
    best_test_acc: float | None
    best_params: dict[str, Any]


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete trial the reports select: highest val/acc, then highest val/f1, then lowest number.

    Not Optuna's ``best_trial``, which takes the first of equal values: on a validation tie (TF-IDF classifiers
    often tie on accuracy) the study summary must name the trial the reports name.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return (
        max(complete, key=lambda t: (t.value, t.user_attrs.get("val_f1", -math.inf), -t.number)) if complete else None
    )


def summarise(study: optuna.Study, cfg: BenchConfig, mlc: Any, parent_run_id: str) -> StudyOutcome:
    """Count trial states, find the best trial, and record the summary on the parent run."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = best_trial(trials)
    outcome = StudyOutcome(
        name=study.study_name,
        storage=cfg.study.storage,
        experiment=tracking.experiment_name(cfg.extract.dataset),
        parent_run_id=parent_run_id,
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL],
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_test_acc=best.user_attrs.get("test_acc") if best else None,
        best_params=dict(best.params) if best else {},
    )
    metrics: dict[str, float] = {
        "study/complete": outcome.complete,
        "study/pruned": outcome.pruned,
        "study/failed": outcome.failed,
    }
    if best is not None:
        # a complete trial (the only kind best_trial returns) has a value
        metrics.update({"best/val_acc": float(cast(float, best.value)), "best/trial": best.number})
        if outcome.best_test_acc is not None:
            metrics["best/test_acc"] = float(outcome.best_test_acc)
    tracking.log_run_data(
        mlc,
        parent_run_id,
        metrics=metrics,
        tags={"best_trial_run_id": best.user_attrs.get("mlflow_run_id", "") if best else ""},
    )
    tracking.log_text(
        mlc, parent_run_id, json.dumps(dataclasses.asdict(outcome), indent=2, default=str), "study_summary.json"
    )
    mlc.set_terminated(parent_run_id, "FINISHED")
    return outcome
