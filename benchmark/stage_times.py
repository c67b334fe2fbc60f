"""A pipeline's stage wall times, summed over the sittings of one run (``stages.csv``).

The default ``layerfuse reproduce`` is many hours on a CPU and is stopped and resumed; a stage's time is the sum over
every sitting that worked on it, so the total says what the whole run cost, not what its last sitting did. The
journal ``<report.out_dir>/<report name>.stages.csv`` is rewritten after every stage and when a sitting stops inside
one (Ctrl-C, SIGTERM, an error); the report folder gets a copy at the end. A run that reached its report starts a
fresh journal the next time. While a stage runs, the journal is also rewritten every ``HEARTBEAT_S`` seconds with
the stage's time so far (outcome ``running (...)``), so a sitting killed outright (SIGKILL, a machine that goes
away) loses at most that much of its time: the sitting that resumes counts the row as that sitting's.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from benchmark.core.cache import atomic_write_bytes

log = logging.getLogger(__name__)

STAGES_FILE = "stages.csv"
FIELDS = ("dataset", "stage", "seconds", "sittings", "outcome")
REPORT_STAGE = "report"
STOPPED = "stopped"  # the outcome of a stage a sitting left unfinished: "stopped (KeyboardInterrupt)"
RUNNING = "running"  # a stage's outcome while it runs, and after a sitting killed in it: "running (since ... UTC)"
HEARTBEAT_S = 60.0  # how often a running stage's time is written (the most a killed sitting loses)


@dataclass(frozen=True)
class Stage:
    """One stage's wall seconds (summed over ``sittings``) and its latest one-line outcome."""

    dataset: str
    stage: str
    seconds: float
    outcome: str
    sittings: int = 1


def finished(stage: Stage) -> bool:
    """Whether ``stage``'s outcome is a finished one (not stopped by a sitting's end, not running)."""
    return not stage.outcome.startswith((STOPPED, RUNNING))


def write_stages(stages: list[Stage], path: Path) -> None:
    """Stage timings as CSV (``FIELDS``), replacing ``path`` whole."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(FIELDS)
    writer.writerows([s.dataset, s.stage, f"{s.seconds:.1f}", s.sittings, s.outcome] for s in stages)
    atomic_write_bytes(path, text.getvalue().encode())


def read_stages(path: Path) -> list[Stage]:
    """The rows of a ``stages.csv`` (a file without ``sittings``, from before sittings were counted, has 1 each)."""
    with path.open(newline="") as fh:
        return [
            Stage(r["dataset"], r["stage"], float(r["seconds"]), r["outcome"], int(r.get("sittings") or 1))
            for r in csv.DictReader(fh)
        ]


class StageJournal:
    """The stage times of one pipeline run, kept in ``path`` across sittings until the run reports."""

    def __init__(self, path: Path, plan: Collection[tuple[str, str]]) -> None:
        """Continue the journal at ``path`` unless its run reached its report; keep only the stages of ``plan``.

        ``plan``: the (dataset, stage) pairs this run may have, so a journal left by a run of other datasets or
        presets does not add its stages to this one.
        """
        self.path = path
        self._stages: dict[tuple[str, str], Stage] = {}
        if not path.is_file():
            return
        try:
            earlier = read_stages(path)
        except (OSError, ValueError, KeyError, csv.Error) as err:  # a record, not data: start it again
            log.warning("ignoring the stage times in %s (%s): this sitting starts them afresh", path, err)
            return
        if any(s.stage == REPORT_STAGE and finished(s) for s in earlier):
            return  # that run reported: this is a new one
        self._stages = {(s.dataset, s.stage): s for s in earlier if (s.dataset, s.stage) in plan}
        if self._stages:
            total = sum(s.seconds for s in self._stages.values())
            log.info(
                "resuming a run whose earlier sittings took %.0fs in %d stage(s) (%s)", total, len(self._stages), path
            )

    @property
    def stages(self) -> list[Stage]:
        """Each stage with its seconds over every sitting so far, in the order they first ran."""
        return list(self._stages.values())

    def add(self, stage: Stage) -> Stage:
        """Add one sitting's time in ``stage`` and write the journal; returns the stage's total so far."""
        total = self._with(stage)
        self._stages = self._rows(total)
        self._write(self.stages)
        return total

    def _rows(self, stage: Stage) -> dict[tuple[str, str], Stage]:
        """The journal's rows with ``stage`` in its place (last when new)."""
        return {**self._stages, (stage.dataset, stage.stage): stage}

    def _with(self, stage: Stage) -> Stage:
        """``stage``'s total with this sitting's time added to the earlier sittings'.

        A stage an earlier sitting finished is only checked again when the run resumes (caches found, studies
        complete): it keeps that sitting's outcome, which says what the run did ("0 cached, 8 extracted"), where the
        check's ("8 cached, 0 extracted") would hide it.
        """
        before = self._stages.get((stage.dataset, stage.stage))
        if before is None:
            return stage
        outcome = before.outcome if finished(before) and finished(stage) else stage.outcome
        return replace(stage, seconds=before.seconds + stage.seconds, sittings=before.sittings + 1, outcome=outcome)

    def _write(self, stages: list[Stage], warn: bool = True) -> bool:
        """Write the journal; False (with a warning when ``warn``) when it could not be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_stages(stages, self.path)
        except OSError as err:  # a full disk costs the record of the times, not the run
            if warn:
                log.warning("could not write the stage times to %s (%s)", self.path, err)
            return False
        return True

    def _heartbeat(self, dataset: str, name: str, started: float, stop: threading.Event) -> None:
        """Until ``stop``, rewrite the journal every ``HEARTBEAT_S`` with the running stage's time so far."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        warned = False  # a full disk is said once per stage, not every heartbeat
        while not stop.wait(HEARTBEAT_S):
            now = self._with(Stage(dataset, name, time.perf_counter() - started, f"{RUNNING} (since {since})"))
            warned |= not self._write(list(self._rows(now).values()), warn=not warned)

    @contextmanager
    def timed(self, dataset: str, name: str, on_stage: Callable[[Stage], None] | None = None) -> Iterator[list[str]]:
        """Time the ``with`` body as stage ``name`` of ``dataset``; the body appends its one-line outcome.

        A body that ends by an exception (Ctrl-C, SIGTERM, an error) adds its time too, outcome ``stopped (...)``:
        the sitting that resumes the stage adds to it. ``on_stage`` gets this sitting's time of a finished stage.
        While the body runs, its time so far is written every ``HEARTBEAT_S`` seconds (see the module docstring).
        """
        outcome: list[str] = []
        started = time.perf_counter()
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(dataset, name, started, stop), daemon=True)
        beat.start()
        try:
            yield outcome
        except BaseException as err:
            stop.set()
            beat.join()
            self.add(Stage(dataset, name, time.perf_counter() - started, f"{STOPPED} ({type(err).__name__})"))
            raise
        stop.set()
        beat.join()
        sitting = Stage(dataset, name, time.perf_counter() - started, outcome[0])
        self.add(sitting)
        log.info("%s %s: %s (%.0fs)", dataset, name, sitting.outcome, sitting.seconds)
        if on_stage is not None:
            on_stage(sitting)
