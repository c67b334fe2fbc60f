"""Cell and table helpers the sections share: TF-IDF cells, tie marks, optional columns, figure files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.report.common.ranking import TIED_MARK
from benchmark.report.common.render import fmt
from benchmark.report.common.style import save

if TYPE_CHECKING:
    from pathlib import Path

    from benchmark.report.common.computed import Computed
    from benchmark.report.common.render import Doc


def lexical_cell(c: Computed, dataset: Any) -> str:
    """The TF-IDF baseline's test accuracy on ``dataset`` as a table cell (— without baseline runs)."""
    return fmt(c.lexical.get(str(dataset), float("nan")))


def vs_lexical_cell(c: Computed, dataset: Any, acc: float) -> str:
    """The gain of ``acc`` over the TF-IDF baseline's test accuracy on ``dataset`` as a signed cell."""
    return fmt(acc - c.lexical.get(str(dataset), float("nan")), sign=True)


OPTIONAL = ("over units", "TF-IDF", "refit")  # columns left out when no row has a value (one unit, no baseline)


def add_table(doc: Doc, headers: list[str], rows: list[list[str]]) -> None:
    """Add a table, leaving out optional columns (seed statistics, TF-IDF) that are empty in every row."""
    keep = [
        i
        for i, h in enumerate(headers)
        if not (any(o in h for o in OPTIONAL) and all(str(r[i]) in ("—", "") for r in rows))
    ]
    doc.table([headers[i] for i in keep], [[r[i] for i in keep] for r in rows])


def add_figure(doc: Doc, fig: Any, folder: Path, name: str, caption: str, files: list[Path]) -> None:
    """Save ``fig`` as ``name`` in ``folder`` (a free name when taken), add it to ``doc`` and ``files``."""
    stem, n = name.removesuffix(".png"), 1
    while (folder / name).exists():  # two models whose short names coincide
        n += 1
        name = f"{stem}-{n}.png"
    files.append(save(fig, folder / name))
    doc.image(name, caption)


def tied_cell(flag: Any) -> str:
    """``yes`` or ``no``: a tied-with-best flag as a table cell."""
    return "yes" if bool(flag) else "no"


def mark_tied(text: str, tied: Any) -> str:
    """A grid cell with the tie mark when its candidate is tied with the best (the chosen one is bold instead)."""
    return f"{text} {TIED_MARK}" if bool(tied) else text
