"""Each model's validation-best single layer, as the layer-sweep preset chooses it, for the presets that fuse it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import optuna

from benchmark.core.config import BenchConfig
from benchmark.core.study_data import ModelDirs
from studies.choice.row_se import ValRows
from studies.choice.selection import Selection, Units, cost_key, select
from studies.choice.val_record import unit_val_rows
from studies.trials.sweep_store import UnitSweep, unit_sweep

log = logging.getLogger(__name__)


def unit_matrix(sweep: UnitSweep, field: str) -> np.ndarray:
    """One score (``val_acc``, ``test_f1``, ...) of every head as a ``(layers, units)`` array."""
    return np.array([[getattr(s, field) for s in unit] for unit in sweep.scores]).T


def choose_layer(
    val_units: np.ndarray, layers: list[int], rule: str, rows: list[ValRows | None] | None = None
) -> Selection:
    """One model's layer by ``rule`` from its validation scores ``(layers, units)``: best, tie set, choice.

    Layers are given shallowest first, so on equal means the shallowest is the best, and ``one-se`` takes the
    shallowest tied layer (the cheapest: a layer's cost grows with its depth, and every layer of one model has the
    same width and bytes). ``rows``: each layer's per-row validation predictions (the calibrated SE).
    """
    per_layer = rows if rows is not None else [None] * len(layers)
    units = [Units(list(u), rows=r) for u, r in zip(val_units, per_layer, strict=True)]
    return select(units, [cost_key(layer, 1, 0, 0, layer) for layer in layers], rule)


def sweep_rows(sweep: UnitSweep, d: ModelDirs) -> list[ValRows | None]:
    """Each layer's ``ValRows`` of a stored sweep (None for a layer whose heads carry no predictions)."""
    return [unit_val_rows(d, [unit[i] for unit in sweep.scores]) for i in range(len(sweep.scores[0]))]


def best_layers(study: optuna.Study, cfg: BenchConfig, dirs: Mapping[str, ModelDirs]) -> dict[str, int]:
    """Each model's validation-chosen single layer, computed once per study and stored in it.

    The same choice as the layer-sweep preset's, from the same stored sweep (``studies.trials.sweep_store``): the layer
    chosen by ``selection.rule`` on the validation accuracies of the units (folds x seeds; ``argmax``: the best
    mean; ``one-se``: the shallowest tied with it), so the layers fused are the ones the layer tables report. The
    stored layers are kept on a resume with another rule, so that every trial of the study fuses the same layers.
    """
    stored = study.user_attrs.get("best_layers")
    if stored is not None:
        used = study.user_attrs.get("best_layers_rule", "argmax")
        if used != cfg.selection.rule:
            log.warning(
                "%s: fused layers were chosen by selection.rule=%s; keeping them (a new study chooses by %s)",
                study.study_name,
                used,
                cfg.selection.rule,
            )
        return {k: int(v) for k, v in stored.items()}
    best, tied = {}, {}
    for model, d in dirs.items():
        sweep = unit_sweep(d, cfg)
        layers = [s.layer for s in sweep.scores[0]]
        picked = choose_layer(unit_matrix(sweep, "val_acc"), layers, cfg.selection.rule, sweep_rows(sweep, d))
        best[model], tied[model] = layers[picked.chosen], [layers[i] for i in picked.tied]
        log.info(
            "%s: layer %d chosen on validation by %s (mean val acc over %d units %.4f; tied with the best: %s)",
            model,
            best[model],
            cfg.selection.rule,
            len(sweep.scores),
            picked.mean[picked.chosen],
            tied[model],
        )
    study.set_user_attr("best_layers", best)
    study.set_user_attr("best_layers_rule", cfg.selection.rule)
    study.set_user_attr("best_layers_tied", tied)
    return best
