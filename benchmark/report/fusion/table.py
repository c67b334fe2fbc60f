"""Models together: fusion methods on model pairs (Table 2's two-model rows), pruned cells, three or more models."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.report.common.labels import config_label, display
from benchmark.report.common.ranking import best
from benchmark.report.common.rows import CONFIG_COLUMNS, best_single, candidate, config_row, frame, ranked_configs

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

FUSION_COLUMNS = (*CONFIG_COLUMNS, "pair", "best_member", "best_member_test_acc", "gain_test_vs_member", "chosen")


def fusion_comparison(data: ReportData) -> pd.DataFrame:
    """Table 2's two-model rows: per dataset, model pair and fusion, the validation-selected layers.

    Each (dataset, pair) is one ranking over its fusions (``TIE_COLUMNS``); ``chosen`` marks the fusion the rule
    picked.
    """
    t = data.trials[data.trials["n_models"] == 2]
    rows = []
    members: dict[tuple[str, tuple[str, ...]], pd.Series | None] = {}  # one search per pair, not per fusion
    for (dataset, pair, _), group in t.groupby(["dataset", t["models"].map(_set_key), "fusion"], sort=True):
        chosen = best(group)
        if chosen is None:
            continue
        row = config_row(data, chosen)
        row["pair"] = " + ".join(display(m) for m in chosen["models"])
        if (dataset, pair) not in members:
            members[dataset, pair] = best_single(data, str(dataset), pair)
        single = members[dataset, pair]
        row["best_member"] = config_label(single) if single is not None else ""
        row["best_member_test_acc"] = float(single[tracking.TEST_ACC]) if single is not None else math.nan
        row["gain_test_vs_member"] = row["test_acc"] - row["best_member_test_acc"]
        rows.append({**row, **candidate(data, chosen)})
    df = ranked_configs(data, rows, FUSION_COLUMNS, ["dataset", "pair"])
    df = df.sort_values(["dataset", "pair", "val_acc"], ascending=[True, True, False], kind="stable")
    return df.assign(chosen=df["picked"].astype(bool)).reset_index(drop=True)


PRUNED_CELL_COLUMNS = ("dataset", "pair", "fusion", "val_acc", "preset", "trials")


def pruned_fusions(data: ReportData) -> pd.DataFrame:
    """Two-model (pair, fusion) cells that only ever ran as pruned trials.

    The validation accuracy they last reported before being cut (the highest over the cell's trials, with that
    trial's preset) and how many trials that was.
    Cells with a finished trial are ``fusion_comparison``'s.
    """
    cut = data.pruned
    if cut is None or cut.empty:
        return frame([], PRUNED_CELL_COLUMNS)
    cut = cut[cut["n_models"] == 2]
    done = data.trials[data.trials["n_models"] == 2]
    finished = {(d, _set_key(m), f) for d, m, f in zip(done["dataset"], done["models"], done["fusion"], strict=True)}
    rows = []
    for (dataset, pair, fusion), group in cut.groupby(["dataset", cut["models"].map(_set_key), "fusion"], sort=True):
        if (dataset, pair, fusion) not in finished:
            top = group.loc[group[tracking.VAL_ACC].idxmax()]
            rows.append(
                {
                    "dataset": dataset,
                    "pair": " + ".join(display(m) for m in top["models"]),
                    "fusion": fusion,
                    "val_acc": float(top[tracking.VAL_ACC]),
                    "preset": top["preset"],
                    "trials": len(group),
                }
            )
    return frame(rows, PRUNED_CELL_COLUMNS)


def _set_key(models: tuple[str, ...]) -> tuple[str, ...]:
    """A model set as an order-free key."""
    return tuple(sorted(models))


def multi_model(data: ReportData, min_models: int = 3) -> pd.DataFrame:
    """Tables 5-6: per dataset and model set of ``min_models`` or more, the validation-selected fusion/layers.

    The model sets of a dataset are one ranking (``TIE_COLUMNS``).
    """
    t = data.trials[data.trials["n_models"] >= min_models]
    rows = []
    for _, group in t.groupby(["dataset", t["models"].map(_set_key)], sort=True):
        chosen = best(group)
        if chosen is not None:
            rows.append({**config_row(data, chosen), **candidate(data, chosen)})
    df = ranked_configs(data, rows, CONFIG_COLUMNS, ["dataset"])
    return df.sort_values(["dataset", "models"], kind="stable").reset_index(drop=True)
