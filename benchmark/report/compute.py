"""Compute every report table once: ``compute`` runs every topic's table functions into a ``Computed``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.report.baseline.table import baseline_grid
from benchmark.report.best.regret import selection_regret
from benchmark.report.best.reproduce import command
from benchmark.report.best.table import best_configs, overall, tied_configs
from benchmark.report.common.computed import Computed
from benchmark.report.common.labels import num_layers
from benchmark.report.common.ranking import tie_groups
from benchmark.report.cost.table import cost_by_models, pareto
from benchmark.report.fusion.table import fusion_comparison, multi_model, pruned_fusions
from benchmark.report.layers.points import layer_points
from benchmark.report.layers.table import best_vs_last, last_k_table
from benchmark.report.paired.table import paired_tests

if TYPE_CHECKING:
    from benchmark.report.common.runs import ReportData


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
