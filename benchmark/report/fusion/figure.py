"""Table 2's two-model rows as a heatmap: model pairs by fusion methods, per dataset."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from benchmark.report.common.labels import display
from benchmark.report.common.style import title

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap


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
    datasets = sorted(df["dataset"].unique())
    fusions = sorted(df["fusion"].unique())
    pairs = sorted(df["pair"].unique())
    label_inches = max(len(f) for f in fusions) * 0.075 + 0.3  # vertical fusion names under each panel
    panel = max(2.2, 0.38 * len(pairs) + 0.9) + label_inches
    fig = Figure(figsize=(max(7.0, 0.55 * len(fusions) + 3.4), panel * len(datasets) + 0.5), layout="constrained")
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for ax, dataset in zip(axes, datasets, strict=True):
        what = _heatmap(fig, ax, df[df["dataset"] == dataset], (pairs, fusions), singles.get(dataset, math.nan))
        title(
            ax,
            f"{display(dataset)}: test (top) and validation accuracy per pair and fusion (layers chosen on "
            f"validation; frame: fusion chosen on validation); {what}",
        )
    title(fig, "Fusion methods on model pairs")
    return fig


def _colours(test: np.ndarray, single: float) -> tuple[np.ndarray, Colormap, Normalize, str]:
    """What a heatmap colours (gain over the single model, else test accuracy), its colour map, its norm, and why."""
    if math.isnan(single):
        norm = Normalize(np.nanmin(test), max(np.nanmax(test), np.nanmin(test) + 1e-3))
        return test, colormaps["viridis"], norm, "colour: test accuracy"
    values = test - single
    lim = max(1e-3, float(np.nanmax(np.abs(values))))
    what = f"colour: test accuracy minus the best single model's {single:.3f} (test; chosen on validation)"
    return values, colormaps["RdBu"], Normalize(-lim, lim), what


def _heatmap(fig: Figure, ax: Axes, sub: pd.DataFrame, grid: tuple[list[str], list[str]], single: float) -> str:
    """One dataset's panel: cells coloured and labelled, the chosen fusion of each pair framed, a colour bar.

    ``grid``: the pairs (rows) and fusions (columns) of every panel. Returns what the colour shows.
    """
    pairs, fusions = grid
    test = np.full((len(pairs), len(fusions)), np.nan)  # (pairs, fusions)
    val = test.copy()
    for r in sub.itertuples():
        test[pairs.index(r.pair), fusions.index(r.fusion)] = r.test_acc
        val[pairs.index(r.pair), fusions.index(r.fusion)] = r.val_acc
    values, cmap, norm, what = _colours(test, single)
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
            Rectangle((fusions.index(r.fusion) - 0.5, pairs.index(r.pair) - 0.5), 1, 1, fill=False, ec="black", lw=2)
        )
    ax.set_xticks(range(len(fusions)), fusions, rotation=90, fontsize="small")
    ax.set_yticks(range(len(pairs)), pairs, fontsize="small")
    ax.set_xlabel("fusion method")
    ax.set_ylabel("model pair")
    fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01).ax.tick_params(labelsize="small")
    return what
