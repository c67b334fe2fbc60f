"""Names and layer specs as the report writes them, and each model's depth.

``display`` shortens a model or dataset name; ``config_label`` and ``layers_label`` name a configuration;
``spec``, ``single_layer``, ``last_k`` and ``short_spec`` read the layer specs trials log; ``num_layers`` finds each
model's depth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.core.models import MODELS
from lightning_modules.layers import LayerSpec, parse_layer_spec
from studies.trials.presets import LAYER_SWEEP

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

SWEEP = LAYER_SWEEP  # the source of a point scored by a layer-sweep run
PLAIN_FUSION = "concat"  # of one input: the input itself


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
