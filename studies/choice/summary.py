"""A study's outcome: trial counts and the selected trial, recorded on the parent run."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from benchmark.core import tracking
from benchmark.core.config import BenchConfig
from studies.choice.candidates import run_cost, unit_scores
from studies.choice.row_se import METHOD
from studies.choice.selection import ARGMAX, Selection, Units, select, unit_layout
from studies.choice.selection import order as rule_order
from studies.choice.val_record import client_blob, read_rows

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
    rule: str = ARGMAX
    tied: tuple[int, ...] = ()  # numbers of the trials tied with the highest mean validation accuracy
    result_test_acc: float | None = None  # the chosen trial refit on all training rows: the study's result
    result_run_id: str | None = None  # that refit run


def ranked(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Complete trials best first, as the reports rank them: highest val/acc, then val/f1, then lowest number.

    Not Optuna's ``best_trial``, which takes the first of equal values: on a validation tie (TF-IDF classifiers
    often tie on accuracy) the study summary must name the trial the reports name.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    val_f1 = [t.user_attrs.get("val_f1", math.nan) for t in complete]
    best_first = rule_order([float(cast(float, t.value)) for t in complete], val_f1, [t.number for t in complete])
    return [complete[i] for i in best_first]


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the highest val/acc (ties: ``ranked``'s order), or None."""
    order = ranked(trials)
    return order[0] if order else None


def choose(
    order: list[optuna.trial.FrozenTrial],
    units: list[Units],
    costs: list[tuple[float, ...]],
    rule: str,
) -> tuple[optuna.trial.FrozenTrial, Selection]:
    """The trial ``rule`` chooses among ``ranked`` trials (with per-unit scores and costs), and the ranking."""
    picked = select(units, costs, rule)
    return order[picked.chosen], picked


def _candidates(mlc: Any, order: list[optuna.trial.FrozenTrial]) -> tuple[list[Units], list[tuple[float, ...]]]:
    """Per-unit validation scores (with per-row predictions) and ``one-se`` costs of each trial, off its MLflow run."""
    from benchmark.core.models import MODELS

    def history(run_id: str) -> Callable[[str], dict[int, float]]:
        return lambda key: {int(m.step): float(m.value) for m in mlc.get_metric_history(run_id, key)}

    units: list[Units] = []
    costs: list[tuple[float, ...]] = []
    for t in order:
        run_id, value = t.user_attrs.get("mlflow_run_id"), float(t.value or math.nan)
        if run_id is None:  # a trial without its run: its value alone, cost unknown
            units.append(Units([value]))
            costs.append(run_cost(math.nan, math.nan, math.nan, math.nan, {}, {}))
            continue
        data = mlc.get_run(run_id).data
        scores = unit_scores(history(str(run_id)), value)
        seeds = int(data.params.get("seeds", 1) or 1)
        rows = read_rows(client_blob(mlc, str(run_id), tracking.ROWS_ARTIFACT))
        units.append(Units(scores, unit_layout(len(scores), seeds), rows))
        models = [m for m in data.params.get("models", "").split(",") if m]
        layers = {m: data.params[f"layer.{m}"] for m in models if f"layer.{m}" in data.params}
        depth = {m: MODELS.get(m).num_layers if m in MODELS else None for m in models}
        costs.append(
            run_cost(
                data.metrics.get(tracking.PERF_INFER_GFLOPS, math.nan),
                float(data.params.get("n_models", len(models)) or len(models)),
                data.metrics.get(tracking.PERF_FUSED_DIM, math.nan),
                data.metrics.get(tracking.PERF_FEATURE_BYTES, math.nan),
                layers,
                depth,
            )
        )
    return units, costs


def chosen_trial(trials: list[optuna.trial.FrozenTrial], mlc: Any, rule: str) -> optuna.trial.FrozenTrial | None:
    """The complete trial ``rule`` chooses (what the summary reports and a refit re-trains), or None."""
    order = ranked(trials)
    return choose(order, *_candidates(mlc, order), rule)[0] if order else None


def summarise(study: optuna.Study, cfg: BenchConfig, mlc: Any, parent_run_id: str) -> StudyOutcome:
    """Count trial states, choose a trial by ``selection.rule``, and record the summary and tie set on the parent run.

    The parent run stays open: ``run_study`` refits the chosen trial and then ends it.

    The rule changes only the choice, not the trials, so rerunning a finished study with another rule recomputes
    its summary.
    """
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    order = ranked(trials)
    units, costs = _candidates(mlc, order) if order else ([], [])
    best, picked = choose(order, units, costs, cfg.selection.rule) if order else (None, None)
    tied = tuple(order[i].number for i in picked.tied) if picked else ()
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
        rule=cfg.selection.rule,
        tied=tied,
    )
    _log_choice(mlc, parent_run_id, outcome, best)
    if picked is not None:
        tie_set = _tie_set(cfg.selection.rule, order, picked, best, units, costs)
        tracking.log_text(mlc, parent_run_id, json.dumps(tie_set, indent=2), tracking.TIED_ARTIFACT)
    tracking.log_text(
        mlc,
        parent_run_id,
        json.dumps(dataclasses.asdict(outcome), indent=2, default=str),
        tracking.STUDY_SUMMARY_ARTIFACT,
    )
    return outcome


def _log_choice(mlc: Any, parent_run_id: str, outcome: StudyOutcome, best: optuna.trial.FrozenTrial | None) -> None:
    """The trial counts, the chosen trial's scores and run, and the rule, on the parent run."""
    metrics: dict[str, float] = {
        tracking.STUDY_COMPLETE: outcome.complete,
        tracking.STUDY_PRUNED: outcome.pruned,
        tracking.STUDY_FAILED: outcome.failed,
    }
    if best is not None:
        # a complete trial (the only kind best_trial returns) has a value
        metrics.update({tracking.BEST_VAL_ACC: float(cast(float, best.value)), tracking.BEST_TRIAL: best.number})
        if outcome.best_test_acc is not None:
            metrics[tracking.BEST_TEST_ACC] = float(outcome.best_test_acc)
    tracking.log_run_data(
        mlc,
        parent_run_id,
        metrics=metrics,
        tags={
            "best_trial_run_id": best.user_attrs.get("mlflow_run_id", "") if best else "",
            tracking.TAG_SELECTION_RULE: outcome.rule,
        },
    )


def _tie_set(
    rule: str,
    order: list[optuna.trial.FrozenTrial],
    picked: Selection,
    best: optuna.trial.FrozenTrial | None,
    units: list[Units],
    costs: list[tuple[float, ...]],
) -> dict[str, Any]:
    """The tie set as ``tied.json`` holds it: the rule, the best and chosen trials, each tied trial's scores."""
    return {
        "rule": rule,
        "best": order[picked.best].number,
        "chosen": best.number if best else None,
        "se_method": METHOD if all(u.rows is not None for u in units) else "per-unit (no per-row predictions)",
        "tied": [
            {
                "trial": order[i].number,
                "val_acc": float(picked.mean[i]),
                "diff_se": float(picked.diff_se[i]),
                "gflops_per_text": costs[i][0] if math.isfinite(costs[i][0]) else None,
            }
            for i in picked.tied
        ],
    }


def record_result(mlc: Any, outcome: StudyOutcome, test_acc: list[float], run_id: str) -> StudyOutcome:
    """Record the refit of the chosen trial (per-seed test accuracies, its run) as the study's result on the parent."""
    acc = float(sum(test_acc) / len(test_acc))
    result = dataclasses.replace(outcome, result_test_acc=acc, result_run_id=run_id)
    parent = outcome.parent_run_id
    tracking.log_run_data(mlc, parent, metrics={tracking.RESULT_TEST_ACC: acc}, tags={tracking.TAG_RESULT_RUN: run_id})
    text = json.dumps(dataclasses.asdict(result), indent=2, default=str)
    tracking.log_text(mlc, parent, text, tracking.STUDY_SUMMARY_ARTIFACT)
    return result
