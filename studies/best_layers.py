"""Each model's validation-best single layer, as the layer-sweep preset chooses it, for the presets that fuse it."""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np
import optuna

from benchmark.core.config import BenchConfig, with_values
from lightning_modules.sweep import sweep_layers
from studies.caches import ModelDirs

log = logging.getLogger(__name__)


def sweep_seed(d: ModelDirs, cfg: BenchConfig, k: int) -> list[Any]:
    """The all-layer sweep of one model with a study's ``k``-th seed (``train.seed + k``), as every preset seeds it."""
    return sweep_layers(d.train, d.test, with_values(cfg, {"train.seed": cfg.train.seed + k}), val_dir=d.val)


def seed_mean(per_seed: list[list[Any]], field: str) -> np.ndarray:
    """Per-layer mean of one score (``val_acc``, ``test_f1``, ...) over the sweeps of several seeds."""
    return cast(np.ndarray, np.mean([[getattr(s, field) for s in scores] for scores in per_seed], axis=0))


def best_layers(study: optuna.Study, cfg: BenchConfig, dirs: dict[str, ModelDirs]) -> dict[str, int]:
    """Each model's validation-best single layer, computed once per study and stored in it.

    The same choice as the layer-sweep preset's: the fast sweep with each of the study's seeds, best mean validation
    accuracy, so the layers fused are the ones the layer tables report.
    """
    stored = study.user_attrs.get("best_layers")
    if stored is not None:
        return {k: int(v) for k, v in stored.items()}
    best = {}
    for model, d in dirs.items():
        per_seed = [sweep_seed(d, cfg, k) for k in range(cfg.study.seeds)]
        val = seed_mean(per_seed, "val_acc")
        i = int(val.argmax())  # first (shallowest) layer wins ties, as in the layer-sweep preset
        best[model] = per_seed[0][i].layer
        log.info(
            "%s: best layer on validation %d (mean val acc over %d seeds %.4f)",
            model,
            best[model],
            len(per_seed),
            val[i],
        )
    study.set_user_attr("best_layers", best)
    return best
