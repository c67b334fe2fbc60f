"""Selection regret: what each dataset's validation choice cost on test (a diagnostic, never used for a choice).

Regret is the chosen configuration's test accuracy minus the best test accuracy among every candidate the
studies scored on that dataset (every finished trial, plus every layer of each layer sweep), all measured the
same way: the mean over the units (fold x seed) of heads fit on the folds' training rows. Zero means the choice
was also the best on test. The chosen configuration is also compared with the dataset's chosen TF-IDF baseline
and its chosen single model, on their refits on all training rows where both sides have one (a study refits its
own choice), else on the same fold heads' test accuracy; ``basis`` says which.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report.baseline.table import best_baseline
from benchmark.report.best.table import refit_of
from benchmark.report.common.labels import config_label, display
from benchmark.report.common.rows import best_single, frame

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData

MARGIN = 0.005  # "beats" means by at least half a point of test accuracy
REFIT, HEADS = "refit", "fold heads"
REGRET_COLUMNS = (
    "dataset",
    "rule",
    "chosen",
    "chosen_test_acc",
    "best_test_config",
    "best_test_acc",
    "regret",
    "candidates",
    "baseline_test_acc",
    "vs_baseline",
    "beats_baseline",
    "single_config",
    "single_test_acc",
    "vs_single",
    "beats_single",
    "basis",
    "baseline_run_id",
    "single_run_id",
)


def _candidates(data: ReportData, points: pd.DataFrame, dataset: str) -> list[tuple[str, float]]:
    """(label, test accuracy) of every trial and every swept layer of ``dataset``."""
    trials = data.trials[data.trials["dataset"] == dataset]
    out = [(config_label(r), float(r[tracking.TEST_ACC])) for _, r in trials.iterrows()]
    if not points.empty:
        swept = points[(points["dataset"] == dataset) & ~points["own"].astype(bool)]
        out += [(f"{display(r['model'])}@{int(r['layer'])}", float(r[tracking.TEST_ACC])) for _, r in swept.iterrows()]
    return [(label, acc) for label, acc in out if not math.isnan(acc)]


def _versus(data: ReportData, chosen: Any, other: Any) -> tuple[float, float, str]:
    """(chosen's, other's test accuracy, basis): refits when both have one, else the fold heads' test accuracy.

    ``chosen`` is a ``best_configs`` row, ``other`` a trial row (or None).
    """
    if other is None:
        return math.nan, math.nan, HEADS
    mine, theirs = refit_of(data, chosen["run_id"])[0], refit_of(data, other["run_id"])[0]
    if not (math.isnan(mine) or math.isnan(theirs)):
        return mine, theirs, REFIT
    return float(chosen["test_acc"]), float(other[tracking.TEST_ACC]), HEADS


def selection_regret(data: ReportData, best: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset (``REGRET_COLUMNS``) for the configurations ``best`` (``best.table.best_configs``) holds."""
    rows = []
    for _, chosen in best.iterrows():
        dataset = str(chosen["dataset"])
        candidates = _candidates(data, points, dataset)
        top_label, top = max(candidates, key=lambda c: c[1]) if candidates else ("", math.nan)
        base, single = best_baseline(data, dataset), best_single(data, dataset)
        mine_b, base_acc, basis_b = _versus(data, chosen, base)
        mine_s, single_acc, basis_s = _versus(data, chosen, single)
        rows.append(
            {
                "dataset": dataset,
                "rule": data.rule,
                "chosen": chosen["config"],
                "chosen_test_acc": float(chosen["test_acc"]),
                "best_test_config": top_label,
                "best_test_acc": top,
                "regret": float(chosen["test_acc"]) - top,
                "candidates": len(candidates),
                "baseline_test_acc": base_acc,
                "vs_baseline": mine_b - base_acc,
                "beats_baseline": bool(mine_b - base_acc >= MARGIN),
                "single_config": "" if single is None else config_label(single),
                "single_test_acc": single_acc,
                "vs_single": mine_s - single_acc,
                "beats_single": bool(mine_s - single_acc >= MARGIN),
                "basis": basis_b if basis_b == basis_s else f"{basis_b} / {basis_s}",
                "baseline_run_id": "" if base is None else str(base["run_id"]),
                "single_run_id": "" if single is None else str(single["run_id"]),
            }
        )
    return frame(rows, REGRET_COLUMNS)
