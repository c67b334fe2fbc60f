"""Best-layer reports: the paper's figures and tables, read back from MLflow for any study or experiment.

``write_report(cfg, studies=..., experiments=...)`` writes ``report.md``, ``report.html`` (self-contained),
PNG figures, ``best_layers.csv`` and ``summary.json`` and logs them on the studies' parent runs.
Modules: ``runs`` (MLflow -> DataFrame), ``selection`` (validation rule, layers), ``tables``, ``compare`` and
``stats`` (numbers and tests), ``plots`` (figures), ``render`` (Markdown/HTML), ``sections`` and ``export``.
"""

from __future__ import annotations

from benchmark.report.export import FORMATS, ReportResult, write_report

__all__ = ["FORMATS", "ReportResult", "write_report"]
