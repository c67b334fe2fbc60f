"""Best-layer reports: the paper's figures and tables, read back from MLflow for any study or experiment.

``write_report(cfg, studies=..., experiments=...)`` writes ``report.md``, ``report.html`` (self-contained),
PNG figures, ``best_layers.csv`` and ``summary.json``, and logs them once, on a run of their own
(``layerfuse.run_kind=report``); each study parent run's tag ``layerfuse.report_run_id`` names the latest one
covering it. Modules: ``runs`` (MLflow -> DataFrame), ``selection`` (the validation rule, layer specs,
labels), ``tables`` (a package, one module per topic) and ``compare`` (the numbers), ``stats`` (seed statistics
and paired tests), ``reproduce`` (the re-training command), ``figures`` (a package, one module per topic),
``render`` (Markdown/HTML), ``sections`` (a package: ``computed`` computes every table once, one module per topic
lays them out, ``layout`` orders them) and ``export`` (the folder and the artifacts).
"""

from __future__ import annotations

from benchmark.report.export import FORMATS, ReportResult, write_report

__all__ = ["FORMATS", "ReportResult", "write_report"]
