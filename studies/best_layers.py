"""Each model's validation-best single layer, as the layer-sweep preset chooses it, for the presets that fuse it."""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
import optuna

from benchmark.core.config import BenchConfig, with_values
from lightning_modules.sweep import sweep_layers
from studies.caches import ModelDirs
from studies.selection import Selection, cost_key, select

log = logging.getLogger(__name__)


def sweep_seed(d: ModelDirs, cfg: BenchConfig, k: int) -> list[Any]:
    """The all-layer sweep of one model with a study's ``k``-th seed (``train.seed + k``), as every preset seeds it."""
    return sweep_layers(d.train, d.test, with_values(cfg, {"train.seed": cfg.train.seed + k}), val_dir=d.val)


def seed_mean(per_seed: list[list[Any]], field: str) -> np.ndarray:
    """Per-layer mean of one score (``val_acc``, ``test_f1``, ...) over the sweeps of several seeds."""
    return cast(np.ndarray, np.mean([[getattr(s, field) for s in scores] for scores in per_seed], axis=0))


def choose_layer(val_units: np.ndarray, layers: list[int], rule: str) -> Selection:
    """One model's layer by ``rule`` from its validation scores ``(layers, units)``: best, tie set, choice.

    Layers are given shallowest first, so on equal means the shallowest is the best, and ``one-se`` takes the
    shallowest tied layer (every layer of one model has the same width and bytes).
    """
    return select(list(val_units), [cost_key(1, 0, 0, layer) for layer in layers], rule)


def best_layers(study: optuna.Study, cfg: BenchConfig, dirs: dict[str, ModelDirs]) -> dict[str, int]:
    """Each model's validation-chosen single layer, computed once per study and stored in it.

    The same choice as the layer-sweep preset's: the fast sweep with each of the study's seeds, the layer chosen by
    ``selection.rule`` on the mean validation accuracy over them (``argmax``: the best; ``one-se``: the shallowest
    tied with it), so the layers fused are the ones the layer tables report. The stored layers are kept on a resume
    with another rule, so that every trial of the study fuses the same layers.
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
        per_seed = [sweep_seed(d, cfg, k) for k in range(cfg.study.seeds)]
        layers = [s.layer for s in per_seed[0]]
        units = np.array([[s.val_acc for s in scores] for scores in per_seed]).T  # (layers, seeds)
        picked = choose_layer(units, layers, cfg.selection.rule)
        best[model], tied[model] = layers[picked.chosen], [layers[i] for i in picked.tied]
        log.info(
            "%s: layer %d chosen on validation by %s (mean val acc over %d seeds %.4f; tied with the best: %s)",
            model,
            best[model],
            cfg.selection.rule,
            len(per_seed),
            picked.mean[picked.chosen],
            tied[model],
        )
    study.set_user_attr("best_layers", best)
    study.set_user_attr("best_layers_rule", cfg.selection.rule)
    study.set_user_attr("best_layers_tied", tied)
    return best
