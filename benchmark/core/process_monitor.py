"""``ProcessMonitor``: the resident memory of this process and its children as an MLflow system metric.

MLflow's own monitors report the machine's memory; a study's cost is its processes' (workers included), so the
system metrics of layerfuse runs add ``system/process_rss_megabytes``. The name is the run layout's
(``benchmark.core.tracking.PROCESS_RSS``), which starts the monitor: this module imports nothing of ours.
"""

from __future__ import annotations

import psutil
from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor


def tree_rss_mb(process: psutil.Process) -> float:
    """Resident memory of ``process`` and its live descendants, in MB (10^6 bytes, as MLflow's memory metrics)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that ended between listing and reading
            continue
    return total / 1e6


class ProcessMonitor(BaseMetricsMonitor):
    """Samples the resident memory of this process and its children as metric ``name`` (mean per logging step)."""

    def __init__(self, name: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = name
        self._process = psutil.Process()

    def collect_metrics(self) -> None:
        """Take one sample."""
        self._metrics[self._name].append(tree_rss_mb(self._process))

    def aggregate_metrics(self) -> dict[str, float]:
        """Mean of the samples since the last logging step."""
        return {k: round(sum(v) / len(v), 1) for k, v in self._metrics.items() if v}
