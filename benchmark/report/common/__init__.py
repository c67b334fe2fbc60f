"""What every report topic shares: runs read from MLflow, labels, rankings, table rows, statistics, rendering, cells.

``runs`` (MLflow -> ``ReportData``), ``labels`` (names, layer specs, each model's depth), ``ranking`` (the selection
rule of ``studies.choice.selection`` applied to DataFrames, with the tie columns), ``rows`` (column sets, a run as a
config row, the rule's pick among trials), ``stats`` (unit statistics and paired tests), ``render`` (the document as
Markdown and HTML), ``style`` (what the figures share), ``cells`` (what the sections' tables share) and ``computed``
(every table, computed once, as the sections read it).
"""
