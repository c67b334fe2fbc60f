"""What the report's figures share: colours and markers, titles and legends that fit, log axes, saving."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, cast

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

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


def title(ax: Axes | Figure, text: str) -> None:
    """Title wrapped to the width it has, so it never runs off the figure."""
    if isinstance(ax, Figure):
        ax.suptitle("\n".join(textwrap.wrap(text, int(ax.get_figwidth() * TITLE_CHARS_PER_INCH * 0.8))))
        return
    inches = ax.get_position().width * cast(Figure, ax.get_figure()).get_figwidth()  # our axes sit on a Figure
    ax.set_title("\n".join(textwrap.wrap(text, max(20, int(inches * TITLE_CHARS_PER_INCH)))), fontsize="medium")


def legend_below(fig: Figure, axes: list[Axes], ncol: int = 3) -> None:
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


def log_if_wide(ax: Axes, which: str, values: pd.Series) -> None:
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


def key(ax: Axes, label: str, **style: object) -> None:
    """A legend-only entry (style key in black), so the legend does not repeat each style per dataset."""
    ax.plot([], [], color=style.pop("color", "black"), label=label, **style)  # type: ignore[arg-type]
