"""The selection rule and the layer bookkeeping every table shares.

Rule (``rank``): highest ``val/acc``, then highest ``val/f1``, then lowest trial number, then lowest layer.
Test scores are only ever read off the row this rule picks ("validation-selected").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from lightning_modules.layers import LayerSpec, parse_layer_spec
from studies.trials.presets import LAYER_SWEEP

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.runs import ReportData

SWEEP = LAYER_SWEEP  # the source of a point scored by a layer-sweep run
PLAIN_FUSION = "concat"  # of one input: the input itself
SELECTION_RULE = (
    "validation-selected: highest mean val/acc over units, ties broken by higher val/f1, then lower trial number, "
    "then lower layer index; test accuracy is reported for the chosen configuration only"
)


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` sorted best-first by the selection rule (NaN val/f1 sorts after any number)."""
    key = df.assign(
        _v=-df[tracking.VAL_ACC].fillna(-math.inf),
        _f=-df[tracking.VAL_F1].fillna(-math.inf),
        _l=df["layer"] if "layer" in df else 0,
    )
    return key.sort_values(["_v", "_f", "trial", "_l"], kind="stable").drop(columns=["_v", "_f", "_l"])


def best(df: pd.DataFrame) -> pd.Series | None:
    """The validation-selected row of ``df`` (None when empty or no row has ``val/acc``)."""
    df = df[df[tracking.VAL_ACC].notna()]
    return None if df.empty else rank(df).iloc[0]


def spec(text: str | None) -> LayerSpec | None:
    """Parsed layer spec, or None for an empty or unparsable value."""
    if text is None or text == "":
        return None
    try:
        return parse_layer_spec(text)
    except (ValueError, KeyError):
        return None


def single_layer(text: str | None, num_layers: int | None) -> int | None:
    """Absolute index of a single-layer spec (``"16"``, ``"-1"``); None for aggregations or unknown depth."""
    s = spec(text)
    if s is None or s.agg is not None:
        return None
    index = s.layers[0]
    if index >= 0:
        return index
    return None if num_layers is None else index % (num_layers + 1)


def last_k(text: str | None) -> tuple[str, int] | None:
    """``("mean", 4)`` for ``"mean:last4"``, as the ``last-k`` preset writes it; None for any other spec."""
    s = spec(text)
    if s is None or s.agg is None:
        return None
    k = len(s.layers)
    return (s.agg, k) if s.layers == tuple(range(-k, 0)) else None


def num_layers(data: ReportData) -> dict[str, int | None]:
    """Transformer depth L per model: a layer sweep's last step, else the model registry, else None.

    Trials do not log the depth of a model outside the registry, and guessing it from the deepest layer a
    trial used would mislabel the last layer.
    """
    from benchmark.core.models import MODELS

    trials = data.trials
    out: dict[str, int | None] = {}
    for model in sorted({m for ms in trials["models"] for m in ms}):
        depth: int | None = None
        for run_id in trials.loc[trials["sweep_model"] == model, "run_id"]:
            steps = data.history(run_id, tracking.SWEEP_VAL_ACC)
            depth = max(steps) if steps else depth
        if depth is None and model in MODELS:
            depth = MODELS.get(model).num_layers
        out[model] = depth
    return out


def layer_points(data: ReportData, depth: dict[str, int | None]) -> pd.DataFrame:
    """Accuracy of single layers of single models: one row per (dataset, model, layer), validation-selected.

    Points come from layer-sweep histories (``sweep/val_acc``/``sweep/test_acc``, step = layer), which train
    every layer with the same head settings. Only for a (dataset, model) without a sweep do single-model
    trials of other presets whose layer spec is one layer fill in (``source`` says which). ``own`` is True when
    the row's run was trained and selected at exactly that layer, so its per-unit histories describe it.
    ``units`` holds each point's per-unit validation scores (a sweep's ``cv/sweep_val_acc.npy`` row, else the run's
    own units for its chosen layer, else the single value) and ``cost`` its ``one-se`` cost (the layer: every layer
    of a model has the same width).
    """
    import pandas as pd

    from benchmark.core.tracking import SWEEP_UNITS_ARTIFACT
    from benchmark.report.ties import COST, SOURCE, UNITS, laid_out, sweep_rows, sweep_units
    from studies.choice.selection import cost_key
    from studies.choice.val_record import read_rows

    rows: list[dict[str, Any]] = []
    for t in data.trials[data.trials["n_models"] == 1].to_dict("records"):
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
        if own is not None:
            rows.append(
                {
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
                    COST: cost_key(t.get(tracking.PERF_INFER_GFLOPS, math.nan), 1, 0, 0, own),
                    SOURCE: data.unit_source(t["run_id"]),
                }
            )
        if swept:
            val, test = (
                data.history(t["run_id"], tracking.SWEEP_VAL_ACC),
                data.history(t["run_id"], tracking.SWEEP_TEST_ACC),
            )
            grid = sweep_units(data, t["run_id"])  # (layers, units), or None before cross-validation
            rows_of = sweep_rows(data, t["run_id"]) or []  # per layer, or none before per-row predictions
            flops = data.history(t["run_id"], tracking.SWEEP_GFLOPS)
            rows += [
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
                    COST: cost_key(flops.get(layer, math.nan), 1, 0, 0, layer),
                    SOURCE: SWEEP_UNITS_ARTIFACT if grid is not None and layer < len(grid) else tracking.VAL_ACC,
                }
                for layer, v in val.items()
                if layer != own
            ]
    cols = [
        *(
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
        ),
        *(UNITS, COST, SOURCE),
    ]
    points = pd.DataFrame(rows, columns=cols)
    has_sweep = points.groupby(["dataset", "model"])["source"].transform(lambda s: (s == SWEEP).any()).astype(bool)
    points = rank(points[~has_sweep | (points["source"] == SWEEP)])
    points = points.drop_duplicates(["dataset", "model", "layer"]).sort_values(["dataset", "model", "layer"])
    return points.reset_index(drop=True)


def display(name: str) -> str:
    """Short name for tables and plots: the last path part of a model or dataset given as a folder or hub id."""
    return name.rstrip("/").rsplit("/", 1)[-1] or name


def short_spec(text: str) -> str:
    """A layer spec for reading: a run of 3+ consecutive layers as ``min:19..25`` instead of ``min:19,20,...,25``."""
    s = spec(text)
    if s is None or s.agg is None or len(s.layers) < 3 or min(s.layers) < 0:
        return text
    first, last = s.layers[0], s.layers[-1]
    return f"{s.agg}:{first}..{last}" if s.layers == tuple(range(first, last + 1)) else text


def layers_label(row: pd.Series | Any) -> str:
    """Each model at its layer spec, e.g. ``dec@20 + enc@mean:3..6``."""
    return " + ".join(f"{display(m)}@{short_spec(row['layers'][m])}" for m in row["models"] if m in row["layers"])


def config_label(row: pd.Series | Any) -> str:
    """Readable configuration: ``layers_label`` plus the fusion, e.g. ``dec@20 + enc@-1 (concat)``.

    A single model shows its fusion only when it is not plain ``concat``: the search preset also fuses one
    input (e.g. ``residual:sum`` projects it first), which changes the head that was trained.
    """
    text = layers_label(row)
    if row["fusion"] and (len(row["models"]) > 1 or row["fusion"] != PLAIN_FUSION):
        text += f" ({row['fusion']})"
    return text
