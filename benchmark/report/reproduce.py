"""The exact command that re-trains one reported configuration, built from its run's ``config.yaml``.

``layerfuse study`` cannot pin one configuration (every preset samples or grids its own), so the command is
a short Python program over the functions a study trial calls: ``resolve_dirs`` finds the feature caches
and ``fit_and_evaluate`` trains and scores, once per seed with ``train.seed + k`` as the objective does. A
layer-sweep run is re-trained the same way at its chosen layer (the sweep trains that same head per layer).
Settings are the run's resolved ``config.yaml`` where it differs from the defaults; without that artifact
they fall back to the run's ``train.*`` params, which then says nothing of extraction and data settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.config import BenchConfig, load_config, to_dict

if TYPE_CHECKING:
    import pandas as pd

CONFIG_ARTIFACT = "config.yaml"
SECTIONS = ("paths", "extract", "data", "train")
IGNORED = {"extract.show_progress"}  # no effect on the result

PROGRAM = """python - <<'EOF'
from benchmark.config import load_config, with_values
from lightning_modules.train import fit_and_evaluate
from studies.runner import resolve_dirs

cfg = load_config(**{settings})
layers = {layers}
dirs = resolve_dirs(cfg)
for k in range({seeds}):  # seed k of the study trained with train.seed + k
    r = fit_and_evaluate(with_values(cfg, {{"train.seed": cfg.train.seed + k}}),
                         [dirs[m].selection(m, spec) for m, spec in layers.items()])
    print(f"seed {{k}}: val acc {{r.val_acc:.4f}}, test acc {{r.test_acc:.4f}}")
EOF"""


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    return {f"{sec}.{key}": value for sec in SECTIONS for key, value in (tree.get(sec) or {}).items()}


def settings(row: pd.Series | dict[str, Any], config_yaml: str | None) -> dict[str, Any]:
    """The config keys of the run in ``row`` that differ from the defaults, with its own models and fusion.

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
        values["extract.dataset"] = row["dataset"]
    values["extract.models"] = tuple(row["models"])
    values["train.fusion"] = row["fusion"] if len(row["models"]) > 1 and row["fusion"] else "concat"
    known = {k: v for k, v in values.items() if k in defaults and k not in IGNORED}
    resolved = _flat(to_dict(load_config(env={}, **known)))  # typed and validated like the study's own config
    return {k: v for k, v in resolved.items() if k in known and (v != defaults[k] or k == "extract.models")}


def command(row: pd.Series | dict[str, Any], config_yaml: str | None) -> str:
    """The shell command (a ``python`` here-document) that re-trains the run in ``row`` with its seeds."""
    values = settings(row, config_yaml)
    body = "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(values.items())) + "}"
    layers = {m: row["layers"][m] for m in row["models"] if m in row["layers"]}
    return PROGRAM.format(settings=body, layers=repr(layers), seeds=int(row["seeds"]))
