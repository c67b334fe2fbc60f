"""Which sweep candidates go on: the probe's loose cut before training, then racing fold by fold (numpy only).

Cross-validation multiplies a sweep's work by its folds, and most layers are clearly out after a fraction of the
evidence. Two rules take them out early, both meant to drop only candidates that the full grid would rank clearly
below the best, not ones it would tie with it (docs/results.md measures this against full grids):

- **Probe** (before any MLP head trains): a closed-form ridge probe scores every candidate on every fold
  (``lightning_modules.probe``). A candidate goes on unless its out-of-fold probe accuracy is below the probe's
  best by more than ``study.probe_margin`` plus ``study.probe_z`` standard errors of the paired per-row difference
  (the two probes classify the same rows). The margin absorbs the gap between a linear probe's ranking and the MLP
  head's, which the paired test alone does not know about.
- **Race** (between folds): the survivors train fold by fold; after ``study.race_burn_in`` folds, a candidate whose
  mean validation accuracy over the folds so far is below the leader's by more than ``study.race_z`` calibrated
  standard errors (``studies.choice.row_se``: paired per-row with seeds averaged, and Nadeau-Bengio corrected) trains no
  more folds. The tie set is one SE wide and the SE shrinks as folds come in, so a candidate this far behind is not
  expected to rejoin it; every candidate that can is scored on every fold, and the tie set is computed as without
  racing. Fold rounds (not seed rounds) so that a single seed races too.

The deepest layer of a sweep always trains on every fold: reports compare the chosen layer with it. A candidate
dropped by either rule keeps its probe score and the reason (``LayerScore.screened``) and is never chosen or tied
(``studies.choice.selection``: a candidate with unscored units is out).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import optuna

from benchmark.core import tracking
from benchmark.core.config import BenchConfig
from benchmark.core.study_data import ModelDirs
from lightning_modules.datamodule import Selection
from lightning_modules.fit import Screen, probe_selections
from lightning_modules.layers import AGGREGATIONS
from lightning_modules.scores import LayerScore
from studies.choice.row_se import calibrated_se
from studies.choice.val_record import unit_val_rows
from studies.trials.presets import StudyContext, TrialPlan

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

PROBE_KEPT, PROBE_SCORES = "probe_kept", "probe_scores"  # a last-k study's user attributes


def probe_keep(correct: np.ndarray, z: float, margin: float, protect: Collection[int]) -> list[int]:
    """Positions of the candidates the probe keeps: not below the best by more than ``margin + z * SE``.

    Args:
        correct: ``(candidates, rows)`` out-of-fold probe correctness (``lightning_modules.probe.ProbeScores``).
        z: ``study.probe_z``.
        margin: ``study.probe_margin``.
        protect: Candidates always kept (a sweep's deepest layer, last-k's last layer alone).
    """
    acc = correct.mean(axis=1)
    best = int(np.argmax(acc))
    diff = correct[best] - correct  # (candidates, rows) paired per row
    n = correct.shape[1]
    se = diff.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(len(acc))
    return [i for i in range(len(acc)) if i in protect or acc[best] - acc[i] <= margin + z * se[i]]


def race_drop(d: ModelDirs, scores: dict[int, list[LayerScore]], z: float) -> list[int]:
    """Layers to drop from the race: behind the leader by more than ``z`` calibrated SEs over the units so far.

    Args:
        d: The model's caches (the validation rows' labels).
        scores: Each layer still racing -> its heads on the units trained so far (the same units for every layer).
        z: ``study.race_z``.
    """
    rows = {layer: unit_val_rows(d, heads) for layer, heads in scores.items()}
    mean = {layer: float(np.mean([h.val_acc for h in heads])) for layer, heads in scores.items()}
    leader = max(mean, key=lambda layer: (mean[layer], -layer))
    deepest = max(scores)
    dropped = []
    for layer in scores:
        a, b = rows[leader], rows[layer]
        if layer in (leader, deepest) or a is None or b is None:
            continue
        if mean[leader] - mean[layer] > z * calibrated_se(a, b):
            dropped.append(layer)
    return dropped


def sweep_screen(cfg: BenchConfig, d: ModelDirs) -> Screen | None:
    """The probe and race of ``cfg.study`` for a sweep of ``d``'s caches, or None with ``study.race=false``."""
    study = cfg.study
    if not study.race:
        return None
    return Screen(
        keep=lambda correct, layers: probe_keep(correct, study.probe_z, study.probe_margin, {int(np.argmax(layers))}),
        drop=lambda scores: race_drop(d, scores, study.race_z),
        burn_in=study.race_burn_in,
    )


def screen_outcome(scores: Sequence[Sequence[LayerScore]]) -> list[dict[str, object]] | None:
    """Per layer of a sweep ``scores[u][i]``: its probe accuracy, units trained and why it stopped; None unscreened."""
    first = scores[0]
    if all(math.isnan(s.probe_acc) for s in first):
        return None
    return [
        {
            "layer": s.layer,
            "probe_acc": s.probe_acc,
            "units_trained": sum(unit[i].epochs > 0 for unit in scores),
            "stopped": next((unit[i].screened for unit in scores if unit[i].screened), ""),
        }
        for i, s in enumerate(first)
    ]


def log_screen(mlc: MlflowClient, run_id: str, scores: Sequence[Sequence[LayerScore]]) -> None:
    """Log a raced sweep's probe curve, units trained per layer and ``SCREEN_ARTIFACT`` (nothing when unscreened).

    A layer the probe or the race stopped is an outcome of the sweep, not a failure: it is logged here, at INFO.
    """
    outcome = screen_outcome(scores)
    if outcome is None:
        return
    stopped = {o["layer"]: o["stopped"] for o in outcome if o["stopped"]}
    if stopped:
        log.info("layers stopped early (clearly behind the best, not failures): %s", stopped)
    tracking.log_run_data(
        mlc,
        run_id,
        histories={
            tracking.SWEEP_PROBE_ACC: [float(o["probe_acc"]) for o in outcome],  # type: ignore[arg-type]
            tracking.SWEEP_UNITS_TRAINED: [float(o["units_trained"]) for o in outcome],  # type: ignore[arg-type]
        },
    )
    tracking.log_text(mlc, run_id, json.dumps(outcome, indent=1), tracking.SCREEN_ARTIFACT)


def last_k_probe(study: optuna.Study, cfg: BenchConfig, dirs: Mapping[str, ModelDirs], ctx: StudyContext) -> None:
    """Probe every last-k candidate of each model once per study; store the kept ones and every probe score in it.

    The last-k preset trains a candidate only when the probe keeps it (``study.user_attrs[PROBE_KEPT]``); the
    last layer alone (k = 1) always trains, the reference its figure draws. Nothing is done with
    ``study.race=false`` or when a worker already stored the verdicts.
    """
    if not cfg.study.race or PROBE_KEPT in study.user_attrs:
        return
    kept: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    for model, d in dirs.items():
        specs = [
            f"{agg}:last{k}" for k in ctx.k_choices if k <= ctx.num_layers[model] + 1 for agg in AGGREGATIONS.names()
        ]
        probed = probe_selections(cfg, [Selection.of(model, spec, d) for spec in specs])
        last = {i for i, spec in enumerate(specs) if spec.endswith(":last1")}
        keep = probe_keep(probed.correct, cfg.study.probe_z, cfg.study.probe_margin, last)
        kept[model] = [specs[i] for i in keep]
        scores[model] = dict(zip(specs, probed.acc.tolist(), strict=True))
        log.info("%s: the probe keeps %d of %d last-k candidates", model, len(keep), len(specs))
    study.set_user_attr(PROBE_KEPT, kept)
    study.set_user_attr(PROBE_SCORES, scores)


def probe_verdict(trial: optuna.Trial, plan: TrialPlan) -> tuple[float, str] | None:
    """A last-k trial's probe accuracy and, when the probe dropped its candidate, the reason to prune it ("" else).

    None when the study has no probe verdicts (``study.race=false``).
    """
    kept = trial.study.user_attrs.get(PROBE_KEPT)
    if kept is None:
        return None
    (model,) = plan.models
    spec = plan.layers[model]
    acc = float(trial.study.user_attrs[PROBE_SCORES][model][spec])
    if spec in kept[model]:
        return acc, ""
    return acc, f"probe: {spec} of {model} is clearly below the probe's best (its probe val acc {acc:.4f})"
