"""What a ranking needs of a finished run, read the same way by the study summary and the reports.

Per-unit validation scores: the history ``cv/val_acc`` (step = unit); runs from before cross-validation fall back to
``seed/val_acc`` (units = seeds), and a run with neither to its single ``val/acc`` (standard error 0, so it ties
only on exact equality). The ``one-se`` cost: computed GFLOPs per text, models, fused width, feature bytes, deepest
layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from benchmark.core import tracking
from lightning_modules.layers import parse_layer_spec
from studies.choice.selection import cost_key

UNIT_SOURCES = (tracking.CV_VAL_ACC, tracking.SEED_VAL_ACC)  # first found wins


def unit_scores(history: Callable[[str], Mapping[int, float]], value: float) -> list[float]:
    """A run's per-unit validation accuracies, in unit order.

    Args:
        history: ``history(metric)`` -> ``{step: value}`` of the run (empty when never logged).
        value: The run's ``val/acc``, used alone when it has no per-unit history.
    """
    for key in UNIT_SOURCES:
        points = history(key)
        if points:
            return [float(points[step]) for step in sorted(points)]
    return [float(value)]


def unit_source(history: Callable[[str], Mapping[int, float]]) -> str:
    """Where ``unit_scores`` reads a run's units: ``cv/val_acc``, ``seed/val_acc``, or ``val/acc`` (one value)."""
    return next((key for key in UNIT_SOURCES if history(key)), tracking.VAL_ACC)


def deepest_layer(layers: Mapping[str, str], depth: Mapping[str, int | None]) -> float:
    """The deepest absolute layer a configuration reads (negative indices resolved by ``depth``; unknown: inf)."""
    deepest = -math.inf
    for model, text in layers.items():
        try:
            indices = parse_layer_spec(str(text)).layers
        except (ValueError, KeyError):
            return math.inf
        total = depth.get(model)
        for i in indices:
            if i < 0 and total is None:
                return math.inf
            deepest = max(deepest, float(i if i >= 0 else i % (int(total) + 1)))  # type: ignore[arg-type]
    return deepest if layers else math.inf


def run_cost(
    gflops: float,
    n_models: float,
    fused_dim: float,
    feature_bytes: float,
    layers: Mapping[str, str],
    depth: Mapping[str, int | None],
) -> tuple[float, ...]:
    """The ``one-se`` cost of a run: fewest GFLOPs per text, then models, then fused width and bytes, then depth.

    A run from before ``perf/infer_gflops_per_text`` has NaN GFLOPs, sorting last.
    """
    return cost_key(gflops, n_models, fused_dim, feature_bytes, deepest_layer(layers, depth))
