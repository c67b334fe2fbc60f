"""The report's figures as pure functions of DataFrames, each returning a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` (rendered by Agg on ``savefig``) rather than pyplot, so
no global figure state leaks and the caller's backend is never switched. Every axis names its unit and
every plot says which scores are validation and which are test of the validation-selected choice.
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, cast

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from benchmark.core import tracking
from benchmark.report.selection import SWEEP, display
from benchmark.report.tables.cost import MIB

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize

ACC = "accuracy (fraction correct)"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
AGG_STYLE = {"mean": ("tab:blue", "o"), "max": ("tab:red", "^"), "min": ("tab:green", "v")}
FROM_TRIALS = "from search trials (other head settings)"
TITLE_CHARS_PER_INCH = 12  # "medium" title text; longer titles wrap instead of running off the figure
LEGEND_CHARS_PER_INCH = 12  # "small" legend text, so a row of columns never runs off the figure


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` and return the path."""
    fig.savefig(path, dpi=110)
    return path


def _title(ax: Axes | Figure, text: str) -> None:
    """Title wrapped to the width it has, so it never runs off the figure."""
    if isinstance(ax, Figure):
        ax.suptitle("\n".join(textwrap.wrap(text, int(ax.get_figwidth() * TITLE_CHARS_PER_INCH * 0.8))))
        return
    inches = ax.get_position().width * cast(Figure, ax.get_figure()).get_figwidth()  # our axes sit on a Figure
    ax.set_title("\n".join(textwrap.wrap(text, max(20, int(inches * TITLE_CHARS_PER_INCH)))), fontsize="medium")


def _legend_below(fig: Figure, axes: list[Axes], ncol: int = 3) -> None:
    """One legend under the figure for every labelled line of ``axes`` (each label once)."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    longest = max((len(label) for label in entries), default=1)
    fits = max(1, int(fig.get_figwidth() * LEGEND_CHARS_PER_INCH) // (longest + 6))  # + room for the line sample
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="outside lower center",
        ncol=min(ncol, fits),
        fontsize="small",
        frameon=False,
    )


def _log_if_wide(ax: Axes, which: str, values: pd.Series) -> None:
    """Log scale on axis ``which`` ("x" or "y") when values span more than 10x, with plain tick labels."""
    low, high = float(values.min()), float(values.max())
    if not (low > 0 and high > 10 * low):
        return
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    span = high / low  # enough labelled ticks in 1-2 decades, one per decade beyond
    subs = (1.0, 2.0, 3.0, 5.0) if span < 30 else (1.0, 2.0, 5.0) if span < 100 else (1.0,)
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, 2, 100 rather than 5x10^-1
    axis.set_minor_formatter(NullFormatter())


def _key(ax: Axes, label: str, **style: object) -> None:
    """A legend-only entry (style key in black), so the legend does not repeat each style per dataset."""
    ax.plot([], [], color=style.pop("color", "black"), label=label, **style)  # type: ignore[arg-type]


def acc_by_layer(points: pd.DataFrame, rows: pd.DataFrame, model: str) -> Figure:
    """Figure 2: validation and test accuracy of every single layer of ``model``, one colour per dataset.

    Points from a layer sweep (same head settings for every layer) are joined by lines; points that only
    single-layer search trials provide (``source`` other than the sweep: other head settings, maybe other
    fusions of one input) are drawn as unjoined diamonds with their own legend entry.

    Args:
        points: ``layer_points`` rows of this model (columns dataset, layer, val/acc, test/acc, source, and
            optionally tied_with_best: those layers are shaded in the dataset's colour).
        rows: ``best_vs_last`` rows of this model (best_layer, last_layer per dataset).
        model: Model name for the title.
    """
    datasets = sorted(points["dataset"].unique())
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    swept = points["source"] == SWEEP
    for i, dataset in enumerate(datasets):
        color = COLORS[i % len(COLORS)]
        mine = points["dataset"] == dataset
        if len(datasets) > 1:
            _key(ax, display(dataset), color=color, lw=6)
        sweep = points[mine & swept].sort_values("layer")
        ax.plot(sweep["layer"], sweep[tracking.VAL_ACC], "-o", color=color, ms=3.5)
        ax.plot(sweep["layer"], sweep[tracking.TEST_ACC], "--s", color=color, ms=3, alpha=0.75)
        trials = points[mine & ~swept]
        ax.plot(trials["layer"], trials[tracking.VAL_ACC], "D", color=color, mfc="none", ms=6, mew=1.5)
        ax.plot(trials["layer"], trials[tracking.TEST_ACC], "D", color=color, ms=4.5, alpha=0.75)
        tied = points[mine & points["tied_with_best"].astype(bool)] if "tied_with_best" in points else points.iloc[0:0]
        for layer in tied["layer"]:
            ax.axvspan(layer - 0.5, layer + 0.5, color=color, alpha=0.12, lw=0)
        info = rows[rows["dataset"] == dataset]
        if len(info):
            b = info.iloc[0]
            ax.plot([b["best_layer"]], [b["best_val_acc"]], "*", color=color, ms=15, mec="black")
            ax.plot([b["best_layer"]], [b["best_test_acc"]], "*", color=color, ms=11, mec="black", alpha=0.6)
    if swept.any():
        _key(ax, "validation (layer sweep)", ls="-", marker="o", ms=3.5)
        _key(ax, "test (layer sweep)", ls="--", marker="s", ms=3)
    if (~swept).any():
        _key(ax, f"validation: {FROM_TRIALS}", ls="none", marker="D", mfc="none", ms=6, mew=1.5)
        _key(ax, f"test: {FROM_TRIALS}", ls="none", marker="D", ms=4.5)
    _key(ax, "best layer (chosen on validation)", ls="none", marker="*", ms=12, color="grey", mec="black")
    if "tied_with_best" in points and points["tied_with_best"].astype(bool).any():
        _key(ax, "shaded: tied with the best (within 1 SE)", lw=8, alpha=0.25, color="grey")
    lasts = sorted({int(v) for v in rows["last_layer"] if v is not None and not math.isnan(v)}) if len(rows) else []
    for j, last in enumerate(lasts):
        ax.axvline(last, color="grey", ls=":", lw=1.5, label=f"last layer (L={last})" if j == 0 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(0, int(points["layer"].min())) - 0.5, max([int(points["layer"].max()), *lasts]) + 0.5)
    ax.margins(y=0.12)  # room for the stars, which are larger than the line markers
    ax.set_xlabel("layer index (0 = embedding layer)")
    ax.set_ylabel(ACC)
    _title(ax, f"Accuracy by layer: {model} (single layers)")
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax], ncol=4)
    return fig


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
            _title(ax, f"{display(dataset)}: {name}" + (" (k and aggregation chosen on validation)" if c else ""))
            ax.grid(alpha=0.3)
    _title(fig, f"Last-k layer aggregation: {model}")
    _legend_below(fig, list(axes.ravel()), ncol=3)
    return fig


def _cell_text_color(cmap: Colormap, norm: Normalize, value: float) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def fusion_methods(df: pd.DataFrame, singles: dict[str, float]) -> Figure:
    """Table 2's two-model rows as one heatmap per dataset: model pairs (rows) by fusion methods (columns).

    Each cell prints the test (top) and validation accuracy at the layers chosen on validation; a black frame
    marks the fusion chosen on validation for that pair. The colour is the gain over the validation-selected single
    model (test; diverging, white = no gain) where that model is known, else the test accuracy itself. A heatmap
    stays legible at the scale of a full reproduction (6 pairs x 14 fusions per dataset) where a dot plot does not.

    Args:
        df: ``fusion_comparison`` rows (columns dataset, pair, fusion, val_acc, test_acc, chosen).
        singles: ``{dataset: test accuracy of the validation-selected single model}``.
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    datasets = sorted(df["dataset"].unique())
    fusions = sorted(df["fusion"].unique())
    pairs = sorted(df["pair"].unique())
    label_inches = max(len(f) for f in fusions) * 0.075 + 0.3  # vertical fusion names under each panel
    panel = max(2.2, 0.38 * len(pairs) + 0.9) + label_inches
    fig = Figure(figsize=(max(7.0, 0.55 * len(fusions) + 3.4), panel * len(datasets) + 0.5), layout="constrained")
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for ax, dataset in zip(axes, datasets, strict=True):
        sub = df[df["dataset"] == dataset]
        test = np.full((len(pairs), len(fusions)), np.nan)  # (pairs, fusions)
        val = test.copy()
        for r in sub.itertuples():
            test[pairs.index(r.pair), fusions.index(r.fusion)] = r.test_acc
            val[pairs.index(r.pair), fusions.index(r.fusion)] = r.val_acc
        single = singles.get(dataset, math.nan)
        if math.isnan(single):
            values, cmap, what = test, colormaps["viridis"], "colour: test accuracy"
            norm = Normalize(np.nanmin(test), max(np.nanmax(test), np.nanmin(test) + 1e-3))
        else:
            values, cmap = test - single, colormaps["RdBu"]
            lim = max(1e-3, float(np.nanmax(np.abs(values))))
            norm = Normalize(-lim, lim)
            what = f"colour: test accuracy minus the best single model's {single:.3f} (test; chosen on validation)"
        im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
        for (i, j), acc in np.ndenumerate(test):
            if not math.isnan(acc):
                ax.text(
                    j,
                    i,
                    f"{acc:.3f}\nval {val[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    linespacing=1.1,
                    color=_cell_text_color(cmap, norm, cast(float, values[i, j])),
                )
        for r in sub[sub["chosen"]].itertuples():
            ax.add_patch(
                Rectangle(
                    (fusions.index(r.fusion) - 0.5, pairs.index(r.pair) - 0.5), 1, 1, fill=False, ec="black", lw=2
                )
            )
        ax.set_xticks(range(len(fusions)), fusions, rotation=90, fontsize="small")
        ax.set_yticks(range(len(pairs)), pairs, fontsize="small")
        ax.set_xlabel("fusion method")
        ax.set_ylabel("model pair")
        fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01).ax.tick_params(labelsize="small")
        _title(
            ax,
            f"{display(dataset)}: test (top) and validation accuracy per pair and fusion (layers chosen on "
            f"validation; frame: fusion chosen on validation); {what}",
        )
    _title(fig, "Fusion methods on model pairs")
    return fig


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
        _log_if_wide(ax, "y", trials[key].dropna() * scale)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("number of fused models")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    _title(fig, "Cost vs number of models (trials that measured their cost)")
    _legend_below(fig, list(axes), ncol=max(2, 2 * len(datasets)))
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
            _log_if_wide(ax, "x", mib)
            ax.set_xlabel("feature memory (MiB)")
            ax.set_ylabel(ACC)
            _title(ax, f"{display(dataset)}: {name}" + (" (runs chosen on validation)" if c else ""))
            ax.grid(alpha=0.3)
    _title(fig, "Accuracy vs cost")
    _legend_below(fig, list(axes.ravel()), ncol=len(sizes) + 2)
    return fig
