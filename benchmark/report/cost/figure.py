"""Sec. 5.4's cost figures: cost vs number of fused models, and accuracy vs feature memory with its Pareto front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from benchmark.core import tracking
from benchmark.report.common.labels import display
from benchmark.report.common.style import ACC, COLORS, legend_below, log_if_wide, title
from benchmark.report.cost.table import MIB

if TYPE_CHECKING:
    import pandas as pd


COST_PANELS = (
    (tracking.PERF_FUSED_DIM, "fused dimension (features)", 1.0),
    (tracking.PERF_FEATURE_BYTES, "feature memory (MiB)", 1 / MIB),
    (tracking.PERF_EXTRACT_MS_PER_SAMPLE, "extraction time (ms/sample)", 1.0),
    (tracking.PERF_HEAD_MS_PER_SAMPLE, "classifier head time (ms/sample)", 1.0),
)


def cost_vs_models(trials: pd.DataFrame) -> Figure:
    """Sec. 5.4: fused dimension, feature memory, extraction and head time vs number of fused models.

    Every costed trial is a dot (datasets coloured); the line with markers joins the medians.
    """
    datasets = sorted(trials["dataset"].unique())
    fig = Figure(figsize=(9, 6.6), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, label, scale) in zip(axes, COST_PANELS, strict=True):
        for i, dataset in enumerate(datasets):
            sub = trials[(trials["dataset"] == dataset) & trials[key].notna()]
            if sub.empty:
                continue
            offset = (i - (len(datasets) - 1) / 2) * 0.08
            color = COLORS[i % len(COLORS)]
            ax.plot(
                sub["n_models"] + offset,
                sub[key] * scale,
                "o",
                color=color,
                alpha=0.4,
                ms=4,
                label=f"{display(dataset)}: trials",
            )
            med = (sub[key] * scale).groupby(sub["n_models"]).median()
            ax.plot(med.index + offset, med.values, "-D", color=color, lw=2, ms=6, label=f"{display(dataset)}: median")
        log_if_wide(ax, "y", trials[key].dropna() * scale)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("number of fused models")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    title(fig, "Cost vs number of models (trials that measured their cost)")
    legend_below(fig, list(axes), ncol=max(2, 2 * len(datasets)))
    return fig


def acc_vs_cost(trials: pd.DataFrame, front: pd.DataFrame) -> Figure:
    """Accuracy vs feature memory with the validation Pareto front; test scores of the same runs on the right.

    Args:
        trials: Costed trials (columns dataset, n_models, val/acc, test/acc, perf/feature_bytes).
        front: ``pareto`` rows (feature_mib, val_acc, test_acc), the runs no cheaper run beats on validation.
    """
    datasets = sorted(trials["dataset"].unique())
    fig = Figure(figsize=(10, 3.8 * len(datasets) + 1.0), layout="constrained")
    axes = fig.subplots(len(datasets), 2, squeeze=False, sharey="row")
    sizes = sorted(trials["n_models"].unique())
    for r, dataset in enumerate(datasets):
        sub = trials[trials["dataset"] == dataset]
        fr = front[front["dataset"] == dataset].sort_values("feature_mib")
        mib = sub[tracking.PERF_FEATURE_BYTES] / MIB
        for c, (split, name) in enumerate((("val", "validation"), ("test", "test"))):
            ax = axes[r][c]
            for i, n in enumerate(sizes):
                mask = sub["n_models"] == n
                ax.plot(
                    mib[mask],
                    sub.loc[mask, f"{split}/acc"],
                    "o",
                    color=COLORS[i % len(COLORS)],
                    alpha=0.55,
                    ms=5,
                    label=f"{n} model{'s' if n > 1 else ''}",
                )
            if c == 0:
                ax.plot(
                    fr["feature_mib"],
                    fr["val_acc"],
                    "-D",
                    color="black",
                    ms=5,
                    drawstyle="steps-post",
                    label="Pareto front (validation)",
                )
            else:  # the same runs on test: no longer a front, so points joined only as a guide
                ax.plot(fr["feature_mib"], fr["test_acc"], ":D", color="black", ms=5, label="Pareto runs on test")
            log_if_wide(ax, "x", mib)
            ax.set_xlabel("feature memory (MiB)")
            ax.set_ylabel(ACC)
            title(ax, f"{display(dataset)}: {name}" + (" (runs chosen on validation)" if c else ""))
            ax.grid(alpha=0.3)
    title(fig, "Accuracy vs cost")
    legend_below(fig, list(axes.ravel()), ncol=len(sizes) + 2)
    return fig
