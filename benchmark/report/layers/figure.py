"""Figures 2 and 3: accuracy of every single layer, and of mean/max/min over the last k layers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from benchmark.core import tracking
from benchmark.report.common.labels import SWEEP, display
from benchmark.report.common.style import ACC, AGG_STYLE, COLORS, FROM_TRIALS, key, legend_below, title

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes


def acc_by_layer(points: pd.DataFrame, rows: pd.DataFrame, model: str) -> Figure:
    """Figure 2: validation and test accuracy of every single layer of ``model``, one colour per dataset.

    Points from a layer sweep (same head settings for every layer) are joined by lines, with a raced sweep's
    ridge probe (``studies.trials.racing``) dotted: a layer it or the race stopped has a probe point but no MLP point.
    Points that only single-layer search trials provide (``source`` other than the sweep: other head settings,
    maybe other fusions of one input) are drawn as unjoined diamonds with their own legend entry.

    Args:
        points: ``layer_points`` rows of this model (columns dataset, layer, val/acc, test/acc, source, and
            optionally tied_with_best: those layers are shaded in the dataset's colour).
        rows: ``best_vs_last`` rows of this model (best_layer, last_layer per dataset).
        model: Model name for the title.
    """
    datasets = sorted(points["dataset"].unique())
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for i, dataset in enumerate(datasets):
        color = COLORS[i % len(COLORS)]
        if len(datasets) > 1:
            key(ax, display(dataset), color=color, lw=6)
        _layer_curves(ax, points[points["dataset"] == dataset], rows[rows["dataset"] == dataset], color)
    _layer_keys(ax, points)
    lasts = sorted({int(v) for v in rows["last_layer"] if v is not None and not math.isnan(v)}) if len(rows) else []
    for j, last in enumerate(lasts):
        ax.axvline(last, color="grey", ls=":", lw=1.5, label=f"last layer (L={last})" if j == 0 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(0, int(points["layer"].min())) - 0.5, max([int(points["layer"].max()), *lasts]) + 0.5)
    ax.margins(y=0.12)  # room for the stars, which are larger than the line markers
    ax.set_xlabel("layer index (0 = embedding layer)")
    ax.set_ylabel(ACC)
    title(ax, f"Accuracy by layer: {model} (single layers)")
    ax.grid(alpha=0.3)
    legend_below(fig, [ax], ncol=4)
    return fig


def _layer_curves(ax: Axes, points: pd.DataFrame, info: pd.DataFrame, color: str) -> None:
    """One dataset's points of Figure 2: the sweep's lines (and probe), trial diamonds, tied shading, best stars."""
    swept = points["source"] == SWEEP
    sweep = points[swept].sort_values("layer")
    ax.plot(sweep["layer"], sweep[tracking.VAL_ACC], "-o", color=color, ms=3.5)
    if tracking.SWEEP_PROBE_ACC in sweep:  # a raced sweep's ridge probe
        probed = sweep[sweep[tracking.SWEEP_PROBE_ACC].notna()]
        ax.plot(probed["layer"], probed[tracking.SWEEP_PROBE_ACC], ":x", color=color, ms=4, lw=1)
    ax.plot(sweep["layer"], sweep[tracking.TEST_ACC], "--s", color=color, ms=3, alpha=0.75)
    trials = points[~swept]
    ax.plot(trials["layer"], trials[tracking.VAL_ACC], "D", color=color, mfc="none", ms=6, mew=1.5)
    ax.plot(trials["layer"], trials[tracking.TEST_ACC], "D", color=color, ms=4.5, alpha=0.75)
    tied = points[points["tied_with_best"].astype(bool)] if "tied_with_best" in points else points.iloc[0:0]
    for layer in tied["layer"]:
        ax.axvspan(layer - 0.5, layer + 0.5, color=color, alpha=0.12, lw=0)
    if len(info):
        b = info.iloc[0]
        ax.plot([b["best_layer"]], [b["best_val_acc"]], "*", color=color, ms=15, mec="black")
        ax.plot([b["best_layer"]], [b["best_test_acc"]], "*", color=color, ms=11, mec="black", alpha=0.6)


def _layer_keys(ax: Axes, points: pd.DataFrame) -> None:
    """Figure 2's legend entries for the marks its points use (in black: one entry per style, not per dataset)."""
    swept = points["source"] == SWEEP
    if swept.any():
        key(ax, "validation (layer sweep)", ls="-", marker="o", ms=3.5)
        key(ax, "test (layer sweep)", ls="--", marker="s", ms=3)
    if tracking.SWEEP_PROBE_ACC in points and points[tracking.SWEEP_PROBE_ACC].notna().any():
        key(ax, "validation: ridge probe (pre-screen; a gap in validation: stopped early)", ls=":", marker="x", ms=4)
    if (~swept).any():
        key(ax, f"validation: {FROM_TRIALS}", ls="none", marker="D", mfc="none", ms=6, mew=1.5)
        key(ax, f"test: {FROM_TRIALS}", ls="none", marker="D", ms=4.5)
    key(ax, "best layer (chosen on validation)", ls="none", marker="*", ms=12, color="grey", mec="black")
    if "tied_with_best" in points and points["tied_with_best"].astype(bool).any():
        key(ax, "shaded: tied with the best (within 1 SE)", lw=8, alpha=0.25, color="grey")


def last_k_curves(table: pd.DataFrame, refs: pd.DataFrame, model: str) -> Figure:
    """Figure 3: mean/max/min over the last k layers vs k, validation (left) and test (right), per dataset.

    Args:
        table: ``last_k_table`` rows of this model.
        refs: ``best_vs_last`` rows of this model, drawn as horizontal reference lines.
        model: Model name for the title.
    """
    datasets = sorted(table["dataset"].unique())
    fig = Figure(figsize=(10, 3.4 * len(datasets) + 0.9), layout="constrained")
    axes = fig.subplots(len(datasets), 2, squeeze=False, sharey="row")
    for r, dataset in enumerate(datasets):
        sub = table[table["dataset"] == dataset]
        ref = refs[refs["dataset"] == dataset]
        for c, (split, name) in enumerate((("val", "validation"), ("test", "test"))):
            ax = axes[r][c]
            for agg, group in sub.groupby("agg", sort=True):
                color, marker = AGG_STYLE.get(str(agg), ("black", "x"))
                group = group.sort_values("k")
                ax.plot(group["k"], group[f"{split}/acc"], marker=marker, color=color, label=f"{agg} of last k layers")
            if len(ref):
                last, chosen = ref.iloc[0][f"last_{split}_acc"], ref.iloc[0][f"best_{split}_acc"]
                if not math.isnan(last):
                    ax.axhline(last, color="grey", ls=":", label="last layer alone")
                ax.axhline(chosen, color="black", ls="--", lw=1, label="best single layer (chosen on validation)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(float(table["k"].min()) - 0.5, float(table["k"].max()) + 0.5)  # no marker on the frame
            ax.margins(y=0.12)
            ax.set_xlabel("k (number of last layers aggregated)")
            ax.set_ylabel(ACC)
            title(ax, f"{display(dataset)}: {name}" + (" (k and aggregation chosen on validation)" if c else ""))
            ax.grid(alpha=0.3)
    title(fig, f"Last-k layer aggregation: {model}")
    legend_below(fig, list(axes.ravel()), ncol=3)
    return fig
