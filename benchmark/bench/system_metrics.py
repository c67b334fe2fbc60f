# mypy: disable-error-code="no-untyped-call"
# MLflow's system-metrics monitor is untyped, and this benchmark drives it by hand.
"""System-metrics overhead (a benchmark, never a test): what MLflow's system metrics cost a tracked run.

Two figures, in throw-away stores under ``$TMPDIR``: the wall and CPU time of one sample (every monitor
collecting, the run-status check and the metric write, as the monitor thread does each interval), so
overhead = cost / ``tracking.system_metrics_interval``; and the wall time of the same extraction with system
metrics off and on, alternating, so the two see the same machine load.

    python -m benchmark.bench.system_metrics --model minilm-l6 --dataset mr --limit 1000 --repeats 3 --interval 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmark.core import tracking
from benchmark.core.config import BenchConfig, load_config
from benchmark.core.process_monitor import ProcessMonitor


def sample_cost(cfg: BenchConfig, samples: int) -> tuple[float, float]:
    """Mean (wall ms, CPU ms) of one system-metrics sample on a run of ``cfg``'s store."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    mlc = tracking.client(cfg.tracking)
    experiment = tracking.ensure_experiment(mlc, tracking.experiment_name("speed"), cfg.tracking)
    run_id = mlc.create_run(experiment).info.run_id
    monitor = SystemMetricsMonitor(run_id, tracking_uri=cfg.tracking.uri)
    monitor.monitors.append(ProcessMonitor(tracking.PROCESS_RSS))
    monitor.collect_metrics()  # psutil's first CPU reading only primes its counters
    monitor.aggregate_metrics()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(samples):  # one iteration = what the monitor thread does per interval
        monitor.collect_metrics()
        mlc.get_run(run_id)
        monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    mlc.set_terminated(run_id)
    return 1000 * wall / samples, 1000 * cpu / samples


def extraction_seconds(cfg: BenchConfig, repeats: int) -> dict[bool, list[tuple[float, float]]]:
    """(wall, process CPU) seconds of a tracked extraction with system metrics off and on, alternating.

    The cache is overwritten each time; process CPU time is the steadier figure on a shared machine.
    """
    import dataclasses

    from extractors.run import extract_all

    out: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    extract_all(cfg, track=False)  # warm the OS file cache and the model files
    for _ in range(repeats):
        for on in (False, True):
            run_cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, system_metrics=on))
            wall, cpu = time.perf_counter(), time.process_time()
            extract_all(run_cfg, track=True)
            out[on].append((time.perf_counter() - wall, time.process_time() - cpu))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the cost of one sample and the side-by-side extraction times; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0, help="tracking.system_metrics_interval")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            None,
            [],
            **{
                "extract.models": (args.model,),
                "extract.dataset": args.dataset,
                "extract.splits": ("train",),
                "extract.limit": args.limit,
                "extract.overwrite": "always",
                "extract.show_progress": False,
                "paths.cache_dir": str(Path(tmp) / "cache"),
                "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
                "tracking.artifact_root": str(Path(tmp) / "artifacts"),
                "tracking.system_metrics_interval": args.interval,
            },
        )
        wall_ms, cpu_ms = sample_cost(cfg, args.samples)
        print(f"one system-metrics sample: {wall_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU (mean of {args.samples})")
        print(
            f"at one sample per {args.interval:g} s: {100 * wall_ms / 1000 / args.interval:.3f}% of a run's wall time"
        )
        seconds = extraction_seconds(cfg, args.repeats)
    print(f"extract {args.model} on {args.limit} {args.dataset} train texts, system metrics every {args.interval:g} s:")
    for i, what in enumerate(("wall", "CPU")):
        off, on = (statistics.median(s[i] for s in seconds[flag]) for flag in (False, True))
        print(
            f"  {what:4} off: {', '.join(f'{s[i]:.2f}' for s in seconds[False])} s; "
            f"on: {', '.join(f'{s[i]:.2f}' for s in seconds[True])} s; medians {off:.2f} / {on:.2f} "
            f"({100 * (on / off - 1):+.1f}%)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
