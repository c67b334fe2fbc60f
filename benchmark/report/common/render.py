"""A tiny document model written as Markdown (images beside it), and that Markdown as self-contained HTML.

The HTML is markdown-it's rendering of the Markdown file (images embedded) in a Jinja2 page, so the two files
always say the same thing.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
code,pre{background:#f6f6f6;padding:.1em .3em;border-radius:3px}pre{padding:.7em;overflow-x:auto;white-space:pre-wrap}
p>em:only-child{color:#555;font-size:.9em}"""


def fmt(x: Any, digits: int = 4, sign: bool = False) -> str:
    """Number as text with ``digits`` decimals (``+`` for gains); ``—`` for missing values."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_units(row: Any, prefix: str = "") -> str:
    """``mean ± std [95% CI low, high] (n=3)`` of per-unit test accuracy, ``—`` with fewer than two units."""
    n = row.get(f"{prefix}test_n", math.nan)
    if n is None or (isinstance(n, float) and math.isnan(n)) or n < 2:
        return "—"
    return (
        f"{fmt(row[f'{prefix}test_mean'])} ± {fmt(row[f'{prefix}test_std'])} "
        f"[{fmt(row[f'{prefix}test_ci_low'])}, {fmt(row[f'{prefix}test_ci_high'])}] (n={int(n)})"
    )


def slug(text: str) -> str:
    """File-name-safe version of a model alias or dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


class Bold(str):
    """A table cell or text shown in bold (the validation-selected entry)."""


@dataclass
class Doc:
    """Ordered blocks of a report.

    ``("h", level, text)``, ``("p", text)``, ``("note", text)``, ``("code", text)``, ``("table", headers, rows)``,
    ``("img", file name, caption)``.
    """

    title: str
    blocks: list[tuple[object, ...]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a section heading."""
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        """Add a paragraph (plain text; backticks mark code)."""
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        """Add a small explanatory paragraph."""
        self.blocks.append(("note", text))

    def code(self, text: str) -> None:
        """Add a code block (e.g. a shell command)."""
        self.blocks.append(("code", text))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        """Add a table of pre-formatted cells (``Bold`` cells are emphasised)."""
        self.blocks.append(("table", headers, rows))

    def image(self, name: str, caption: str) -> None:
        """Add a PNG that lies beside the report (file name relative to the report folder)."""
        self.blocks.append(("img", name, caption))

    def images(self) -> list[str]:
        """File names of every image, in order."""
        return [str(b[1]) for b in self.blocks if b[0] == "img"]


def _md_cell(cell: str) -> str:
    text = str(cell).replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if isinstance(cell, Bold) and text else text


def to_markdown(doc: Doc) -> str:
    """GitHub-flavoured Markdown; images are linked by relative file name."""
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out += ["#" * int(cast(int, block[1])) + f" {block[2]}", ""]
        elif kind in ("p", "note"):
            out += [f"_{block[1]}_" if kind == "note" else str(block[1]), ""]
        elif kind == "code":
            out += ["```bash", str(block[1]), "```", ""]
        elif kind == "table":
            headers, rows = cast("list[str]", block[1]), cast("list[list[str]]", block[2])
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join("---" for _ in headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{block[2]}]({block[1]})", "", f"_{block[2]}_", ""]
    return "\n".join(out).rstrip() + "\n"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title><style>{{ css | safe }}</style></head><body>
{{ body | safe }}</body></html>
"""


def _img_src(folder: Path, name: str) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def to_html(doc: Doc, folder: Path) -> str:
    """One self-contained HTML page: the Markdown rendering through markdown-it, PNGs from ``folder`` embedded.

    Each ``<img>`` carries its PNG as a base64 ``data:`` URI and ``data-file`` with the PNG's file name beside the
    page. Raw HTML in the text is escaped, not passed through.
    """
    import jinja2
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        name, alt = str(token.attrGet("src")), html.escape(token.content)
        return f'<img src="{_img_src(folder, name)}" data-file="{html.escape(name)}" alt="{alt}">'

    md.add_render_rule("image", image)
    template = jinja2.Environment(autoescape=True).from_string(PAGE)
    return template.render(title=doc.title, css=CSS, body=md.render(to_markdown(doc)))
