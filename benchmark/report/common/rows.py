"""What every report table shares: the column sets, DataFrames of rows, a run as a config row, the rule's pick.

``choose`` applies the validation selection rule to trial rows as one ranking; ``config_row`` turns the chosen run
into a row of ``CONFIG_COLUMNS`` with its test statistics over units.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report.common.labels import config_label, layers_label, num_layers
from benchmark.report.common.ranking import COST, UNITS, picked, tie, tie_groups, trial_candidates
from benchmark.report.common.stats import unit_stats

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

UNIT_COLUMNS = ("test_n", "test_mean", "test_std", "test_ci_low", "test_ci_high")  # test accuracy over units
CONFIG_COLUMNS = (
    "dataset",
    "models",
    "n_models",
    "fusion",
    "config",
    "layers_label",
    "layers",
    "val_acc",
    "val_f1",
    "test_acc",
    "test_f1",
    "trial",
    "study",
    "preset",
    "run_id",
    *UNIT_COLUMNS,
)
SCRATCH = [tracking.VAL_ACC, tracking.VAL_F1, UNITS, COST]  # ranking inputs of config rows, dropped once ranked


def frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """``rows`` as a DataFrame with exactly ``columns``, also when empty, so every table can be indexed by column."""
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns))


def unit_columns(data: ReportData, run_id: str, prefix: str = "") -> dict[str, float]:
    """Test statistics of a run over its units (``seed/test_acc``, step = unit); NaNs where it has no such history."""
    values = [v for _, v in sorted(data.history(run_id, tracking.SEED_TEST_ACC).items())]
    stats = unit_stats(values) if values else None
    keys = [f"{prefix}{c}" for c in UNIT_COLUMNS]
    if stats is None:
        return dict.fromkeys(keys, math.nan)
    return dict(zip(keys, (stats.n, stats.mean, stats.std, stats.ci_low, stats.ci_high), strict=True))


def ranked_configs(
    data: ReportData, rows: list[dict[str, Any]], columns: tuple[str, ...], keys: list[str]
) -> pd.DataFrame:
    """Config rows (with ``units`` and ``cost``) ranked per group of ``keys`` with the tie columns."""
    df = frame(rows, (*columns, UNITS, COST))
    df = df.assign(**{tracking.VAL_ACC: df["val_acc"], tracking.VAL_F1: df["val_f1"]})
    return tie_groups(df, keys, data.rule).drop(columns=SCRATCH)


def candidate(data: ReportData, row: pd.Series) -> dict[str, Any]:
    """A trial row's ranking inputs: its per-unit validation scores and its ``one-se`` cost."""
    one = trial_candidates(data, row.to_frame().T, num_layers(data)).iloc[0]
    return {UNITS: one[UNITS], COST: one[COST]}


def config_row(data: ReportData, row: pd.Series) -> dict[str, Any]:
    """A run as a table row (``CONFIG_COLUMNS``): configuration, scores and its test statistics over units."""
    out: dict[str, Any] = {
        "dataset": row["dataset"],
        "models": ",".join(row["models"]),
        "n_models": int(row["n_models"]),
        "fusion": row["fusion"],
        "config": config_label(row),
        "layers_label": layers_label(row),
        "layers": "; ".join(f"{m}={row['layers'][m]}" for m in row["models"] if m in row["layers"]),
        "val_acc": float(row[tracking.VAL_ACC]),
        "val_f1": float(row[tracking.VAL_F1]),
        "test_acc": float(row[tracking.TEST_ACC]),
        "test_f1": float(row[tracking.TEST_F1]),
        "trial": int(row["trial"]),
        "study": row["study"],
        "preset": row["preset"],
        "run_id": row["run_id"],
    }
    out.update(unit_columns(data, row["run_id"]))
    return out


def choose(data: ReportData, trials: pd.DataFrame) -> pd.Series | None:
    """The trial ``data.rule`` picks among trial rows ``trials`` as one ranking (None when none has val/acc)."""
    trials = trials[trials[tracking.VAL_ACC].notna()]
    return None if trials.empty else picked(tie(trial_candidates(data, trials, num_layers(data)), data.rule))


def best_single(data: ReportData, dataset: str, members: tuple[str, ...] | None = None) -> pd.Series | None:
    """The single-model run ``selection.rule`` picks on ``dataset`` (optionally only among ``members``)."""
    t = data.trials
    mask = (t["dataset"] == dataset) & (t["n_models"] == 1)
    if members is not None:
        mask &= t["models"].map(lambda ms: ms[0] in members)
    return choose(data, t[mask])
