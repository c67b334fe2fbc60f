"""The single-layer points of every single model: one row per (dataset, model, layer), validation-selected.

Points come from layer-sweep histories (``sweep/val_acc``/``sweep/test_acc``, step = layer), which train every layer
with the same head settings. Only for a (dataset, model) without a sweep do single-model trials of other presets
whose layer spec is one layer fill in (``source`` says which).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.tracking import SWEEP_UNITS_ARTIFACT
from benchmark.report.common.labels import SWEEP, single_layer
from benchmark.report.common.ranking import COST, SOURCE, UNITS, rank, sweep_rows, sweep_units
from studies.choice.selection import laid_out, layer_cost
from studies.choice.val_record import read_rows

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

POINT_COLUMNS = (
    "dataset",
    "model",
    "layer",
    tracking.VAL_ACC,
    tracking.VAL_F1,
    tracking.TEST_ACC,
    "trial",
    "run_id",
    "study",
    "source",
    "own",
    tracking.SWEEP_PROBE_ACC,
    UNITS,
    COST,
    SOURCE,
)


def layer_points(data: ReportData, depth: dict[str, int | None]) -> pd.DataFrame:
    """Accuracy of single layers of single models (``POINT_COLUMNS``), validation-selected (see module doc).

    ``own`` is True when the row's run was trained and selected at exactly that layer, so its per-unit histories
    describe it. ``units`` holds each point's per-unit validation scores (a sweep's ``cv/sweep_val_acc.npy`` row, else
    the run's own units for its chosen layer, else the single value) and ``cost`` its ``one-se`` cost (the layer:
    every layer of a model has the same width).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for t in data.trials[data.trials["n_models"] == 1].to_dict("records"):
        rows += _trial_points(data, t, depth)
    points = pd.DataFrame(rows, columns=list(POINT_COLUMNS))
    has_sweep = points.groupby(["dataset", "model"])["source"].transform(lambda s: (s == SWEEP).any()).astype(bool)
    points = rank(points[~has_sweep | (points["source"] == SWEEP)])
    points = points.drop_duplicates(["dataset", "model", "layer"]).sort_values(["dataset", "model", "layer"])
    return points.reset_index(drop=True)


def _trial_points(data: ReportData, t: dict[str, Any], depth: dict[str, int | None]) -> list[dict[str, Any]]:
    """The points of one single-model trial: its own layer (if a single one), then a sweep's other layers."""
    model = t["models"][0]
    own = single_layer(t["layers"].get(model), depth.get(model))
    swept = t["sweep_model"] == model
    base = {
        "dataset": t["dataset"],
        "model": model,
        "trial": t["trial"],
        "run_id": t["run_id"],
        "study": t["study"],
        "source": SWEEP if swept else "trial",
    }
    probe = data.history(t["run_id"], tracking.SWEEP_PROBE_ACC) if swept else {}  # a raced sweep's pre-screen
    rows = [] if own is None else [_own_point(data, t, base, own, probe)]
    return rows + (_sweep_points(data, t, base, own, probe) if swept else [])


def _own_point(
    data: ReportData, t: dict[str, Any], base: dict[str, Any], own: int, probe: dict[int, float]
) -> dict[str, Any]:
    """The point of the layer the trial was trained and selected at, with the run's own units."""
    return {
        **base,
        "layer": own,
        tracking.SWEEP_PROBE_ACC: probe.get(own, math.nan),
        tracking.VAL_ACC: t[tracking.VAL_ACC],
        tracking.VAL_F1: t[tracking.VAL_F1],
        tracking.TEST_ACC: t[tracking.TEST_ACC],
        "own": True,
        UNITS: laid_out(
            data.units(t["run_id"], t[tracking.VAL_ACC]),
            t["seeds"],
            read_rows(data.artifact(t["run_id"], tracking.ROWS_ARTIFACT)),
        ),
        COST: layer_cost(t.get(tracking.PERF_INFER_GFLOPS, math.nan), own),
        SOURCE: data.unit_source(t["run_id"]),
    }


def _sweep_points(
    data: ReportData, t: dict[str, Any], base: dict[str, Any], own: int | None, probe: dict[int, float]
) -> list[dict[str, Any]]:
    """The points of a layer sweep's other layers, from its histories (and per-unit scores and rows, when logged)."""
    run_id = t["run_id"]
    val, test = data.history(run_id, tracking.SWEEP_VAL_ACC), data.history(run_id, tracking.SWEEP_TEST_ACC)
    grid = sweep_units(data, run_id)  # (layers, units), or None before cross-validation
    rows_of = sweep_rows(data, run_id) or []  # per layer, or none before per-row predictions
    flops = data.history(run_id, tracking.SWEEP_GFLOPS)
    return [
        {
            **base,
            "layer": layer,
            tracking.VAL_ACC: v,
            tracking.VAL_F1: math.nan,
            tracking.TEST_ACC: test.get(layer, math.nan),
            "own": False,
            tracking.SWEEP_PROBE_ACC: probe.get(layer, math.nan),
            UNITS: laid_out(
                [float(u) for u in grid[layer]] if grid is not None and layer < len(grid) else [v],
                t["seeds"],
                rows_of[layer] if layer < len(rows_of) else None,
            ),
            COST: layer_cost(flops.get(layer, math.nan), layer),
            SOURCE: SWEEP_UNITS_ARTIFACT if grid is not None and layer < len(grid) else tracking.VAL_ACC,
        }
        for layer, v in val.items()
        if layer != own
    ]
