"""``Computed``: every report table, computed once (``report.compute``) and read by every topic's section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Computed:
    """All report tables (DataFrames) plus the paired tests, computed once from ``ReportData``."""

    depth: dict[str, int | None]
    points: pd.DataFrame
    best_last: pd.DataFrame
    last_k: pd.DataFrame
    fusion: pd.DataFrame
    multi: pd.DataFrame
    cost: pd.DataFrame
    pareto: pd.DataFrame
    best: pd.DataFrame
    commands: dict[str, str]
    paired: list[dict[str, Any]]
    baseline: pd.DataFrame
    lexical: dict[str, float]  # dataset -> test accuracy of the validation-selected TF-IDF baseline
    pruned_fusion: pd.DataFrame  # two-model (pair, fusion) cells whose every trial was pruned
    overall: pd.DataFrame  # every finished trial, ranked per dataset with the tie columns
    tied: pd.DataFrame  # per dataset, the configurations tied with the best, with their test scores
    regret: pd.DataFrame  # per dataset, what the choice cost on test against the best candidate (a diagnostic)
