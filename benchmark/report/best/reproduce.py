"""The exact ``layerfuse fit`` command that re-trains one reported configuration, built from its run.

``layerfuse fit`` trains a configuration once per unit (fold x seed, seed k with ``train.seed + k``), as study
trials do: the command carries the run's seeds and its ``data.*`` settings (``data.cv_folds`` among them), so a
cross-validated trial is re-trained on the same folds. A layer-sweep run is re-trained the same way at its chosen
layer (the sweep trains that same head per layer). Settings come from the run's resolved ``config.yaml`` where
they differ from the defaults; without that artifact they fall back to the run's ``train.*`` params, which say
nothing of extraction and data settings.
"""

from __future__ import annotations

import ast
import shlex
from typing import TYPE_CHECKING, Any

from benchmark.core.config import BenchConfig, load_config, to_dict

if TYPE_CHECKING:
    import pandas as pd

SECTIONS = ("paths", "extract", "data", "train")
FLAGS = {"extract.dataset", "extract.models", "train.fusion"}  # given as --dataset, --layer and --fusion
IGNORED = {"extract.show_progress"}  # no effect on the result


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    return {f"{sec}.{key}": value for sec in SECTIONS for key, value in (tree.get(sec) or {}).items()}


def settings(row: pd.Series | dict[str, Any], config_yaml: str | None) -> dict[str, Any]:
    """The run's config values that differ from the defaults, plus its dataset, models and fusion.

    Args:
        row: A trial row of ``ReportData.trials``.
        config_yaml: The run's ``config.yaml`` artifact (None: fall back to its ``train.*`` params).
    """
    import yaml

    defaults = _flat(to_dict(BenchConfig()))
    if config_yaml is not None:
        values = _flat(yaml.safe_load(config_yaml) or {})
    else:
        values = {k: v for k, v in row["params"].items() if k.startswith("train.")}
        values["train.fusion"] = row["fusion"] or defaults["train.fusion"]
    values.update({"extract.dataset": row["dataset"], "extract.models": tuple(row["models"])})
    known = {k: v for k, v in values.items() if k in defaults and k not in IGNORED}
    resolved = _flat(to_dict(load_config(env={}, **known)))  # typed and validated like the study's own config
    return {k: v for k, v in resolved.items() if k in known and (v != defaults[k] or k in FLAGS)}


def _set_value(value: Any) -> str:
    """``value`` as ``--set`` text that parses back to it (``literal_eval``, then coercion to the field's type)."""
    if isinstance(value, list | tuple):
        return ",".join(_set_value(v) for v in value)
    if isinstance(value, str):
        try:
            ambiguous = ast.literal_eval(value) != value  # "1e-4", "None" or "True" would parse as another type
        except (ValueError, SyntaxError):
            ambiguous = False
        return repr(value) if ambiguous else value
    return repr(value)


def command(row: pd.Series | dict[str, Any], config_yaml: str | None) -> str:
    """The ``layerfuse fit`` command line that re-trains the run in ``row`` on its units (its folds and seeds)."""
    values = settings(row, config_yaml)
    argv = ["layerfuse", "fit", "--dataset", values.pop("extract.dataset")]
    for model in values.pop("extract.models"):
        argv += ["--layer", f"{model}={row['layers'][model]}"]
    argv += ["--fusion", values.pop("train.fusion"), "--seeds", str(int(row["seeds"]))]
    for key, value in sorted(values.items()):
        argv += ["--set", f"{key}={_set_value(value)}"]
    return " ".join(shlex.quote(a) for a in argv)
