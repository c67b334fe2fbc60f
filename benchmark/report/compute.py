"""Compute every report table once: ``compute`` runs the table functions and bundles them as ``Computed``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmark.core import tracking
from benchmark.report.baseline.table import baseline_grid
from benchmark.report.best.regret import selection_regret
from benchmark.report.best.reproduce import command
from benchmark.report.best.table import best_configs, overall, tied_configs
from benchmark.report.common.labels import num_layers
from benchmark.report.common.ranking import tie_groups
from benchmark.report.cost.table import cost_by_models, pareto
from benchmark.report.fusion.table import fusion_comparison, multi_model, pruned_fusions
from benchmark.report.layers.points import layer_points
from benchmark.report.layers.table import best_vs_last, last_k_table
from benchmark.report.paired.table import paired_tests

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.report.common.runs import ReportData


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


def compute(data: ReportData) -> Computed:
    """Run every topic's table functions on ``data``."""
    depth = num_layers(data)
    points = tie_groups(layer_points(data, depth), ["dataset", "model"], data.rule)
    points = points.sort_values(["dataset", "model", "layer"]).reset_index(drop=True)
    ranked = overall(data)
    best = best_configs(data, ranked)
    trials = data.trials.set_index("run_id", drop=False)
    commands = {}
    for _, r in best.iterrows():
        config = data.artifact(r["run_id"], tracking.CONFIG_ARTIFACT)
        commands[str(r["dataset"])] = command(trials.loc[r["run_id"]], None if config is None else config.decode())
    grid = baseline_grid(data)
    lexical = (
        {str(r["dataset"]): float(r["test_acc"]) for _, r in grid.iterrows() if r["chosen"]} if not grid.empty else {}
    )
    return Computed(
        depth,
        points,
        best_vs_last(data, points, depth),
        last_k_table(data),
        fusion_comparison(data),
        multi_model(data),
        cost_by_models(data),
        pareto(data),
        best,
        commands,
        paired_tests(data),
        grid,
        lexical,
        pruned_fusions(data),
        ranked,
        tied_configs(data, ranked),
        selection_regret(data, best, points),
    )
