"""Best-layer reports: the paper's figures and tables, read back from MLflow for any study or experiment.

``write_report(cfg, studies=..., experiments=...)`` writes ``report.md``, ``report.html`` (self-contained),
PNG figures, ``best_layers.csv`` and ``summary.json``, and logs them once, on a run of their own
(``layerfuse.run_kind=report``); each study parent run's tag ``layerfuse.report_run_id`` names the latest one
covering it.

One package per topic, each holding its numbers (``table``), its figures (``figure``) and its layout (``section``):
``layers`` (single layers and last-k), ``fusion`` (fusion methods, three or more models), ``cost``, ``best`` (the
chosen configuration, its ties, regret and re-training command), ``baseline`` (TF-IDF), ``paired`` (paired tests)
and ``answer`` (the first screen, read back by ``layerfuse export --report``); ``shift`` the train-vs-test check.
``common`` holds what they share (runs read from MLflow, labels, the rankings, rows, stats, rendering, figure style,
cells). ``compute`` computes every table once, ``layout`` orders the sections, ``summary`` writes ``summary.json``
and ``export`` the folder and its run. The selection rule is ``studies.choice.selection``'s: every ranking here
calls it.
"""

from __future__ import annotations

from benchmark.report.export import FORMATS, ReportResult, write_report

__all__ = ["FORMATS", "ReportResult", "write_report"]
