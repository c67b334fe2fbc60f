"""Stage times summed over the sittings of a resumed run (``benchmark.stage_times``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.stage_times import Stage, StageJournal, read_stages, write_stages

PLAN = {("mr", "extract"), ("mr", "layer-sweep"), ("mr", "report")}


def test_a_stage_stopped_and_resumed_sums_its_sittings_and_a_reported_run_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "reproduce.stages.csv"
    first = StageJournal(path, PLAN)
    first.add(Stage("mr", "extract", 10.0, "0 cached, 2 extracted"))
    with pytest.raises(KeyboardInterrupt), first.timed("mr", "layer-sweep"):
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM turned into it, in the middle of the stage
    rows = {s.stage: s for s in read_stages(path)}
    assert rows["layer-sweep"].outcome == "stopped (KeyboardInterrupt)" and rows["layer-sweep"].sittings == 1
    stopped_s = rows["layer-sweep"].seconds

    second = StageJournal(path, PLAN)  # the rerun
    seen: list[Stage] = []
    with second.timed("mr", "extract", seen.append) as outcome:
        outcome.append("2 cached, 0 extracted")
    second.add(Stage("mr", "layer-sweep", 100.0, "layer-sweep-mr: 4 complete"))
    assert seen[0].sittings == 1 and seen[0].seconds < 10.0  # the callback gets this sitting's time
    got = {s.stage: s for s in second.stages}
    assert got["extract"].sittings == 2 and got["extract"].seconds == pytest.approx(10.0 + seen[0].seconds)
    assert got["extract"].outcome == "0 cached, 2 extracted"  # what the run did, not the resumed check's
    assert got["layer-sweep"].outcome == "layer-sweep-mr: 4 complete"  # a stopped stage: the sitting that finished it
    assert got["layer-sweep"].seconds == pytest.approx(stopped_s + 100.0) and got["layer-sweep"].sittings == 2
    assert [s.stage for s in read_stages(path)] == ["extract", "layer-sweep"]  # written after every stage

    with pytest.raises(OSError), second.timed("mr", "report"):
        raise OSError("disk full")  # a report that failed does not end the run
    assert StageJournal(path, PLAN).stages[-1].outcome == "stopped (OSError)"
    second.add(Stage("mr", "report", 5.0, "9 files"))
    assert StageJournal(path, PLAN).stages == []  # that run reported: the next one is a new run


def test_a_journal_of_other_stages_or_unreadable_does_not_count(tmp_path: Path, caplog) -> None:
    path = tmp_path / "reproduce.stages.csv"
    write_stages([Stage("sst2", "extract", 50.0, "x"), Stage("mr", "extract", 7.0, "y", 3)], path)
    assert StageJournal(path, PLAN).stages == [Stage("mr", "extract", 7.0, "y", 3)]  # sst2 is not in this run
    path.write_text("dataset,stage,seconds,outcome\nmr,extract,7.5,y\n")  # a journal from before sittings
    assert StageJournal(path, PLAN).stages == [Stage("mr", "extract", 7.5, "y", 1)]
    path.write_text("dataset,stage,seconds\nmr,extract,abc\n")
    assert StageJournal(path, PLAN).stages == [] and "starts them afresh" in caplog.text


KILLED_SITTING = """
import sys, time
from pathlib import Path
from benchmark import stage_times
stage_times.HEARTBEAT_S = 0.2
journal = stage_times.StageJournal(Path(sys.argv[1]), {("mr", "extract"), ("mr", "layer-sweep"), ("mr", "report")})
with journal.timed("mr", "layer-sweep"):
    print("started", flush=True)
    time.sleep(60)
"""


def test_a_sitting_killed_outright_keeps_its_time_up_to_the_last_heartbeat(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "reproduce.stages.csv"
    write_stages([Stage("mr", "extract", 10.0, "0 cached, 2 extracted")], path)
    spawned = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SITTING, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    ready = time.monotonic()
    time.sleep(1.5)
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)  # no handler runs: only the heartbeat's rows are left
    proc.wait()
    (extract, sweep) = read_stages(path)
    assert extract == Stage("mr", "extract", 10.0, "0 cached, 2 extracted")
    assert sweep.outcome.startswith("running (since ") and sweep.sittings == 1
    # It ran from before "started" until the kill, and lost at most one heartbeat (0.2 s; 0.3 s slack for a busy CI).
    assert killed - ready - 0.5 <= sweep.seconds <= killed - spawned

    resumed = StageJournal(path, PLAN)  # the killed sitting counts as one
    resumed.add(Stage("mr", "layer-sweep", 30.0, "layer-sweep-mr: 4 complete"))
    assert read_stages(path)[1] == Stage(
        "mr", "layer-sweep", pytest.approx(sweep.seconds + 30.0), "layer-sweep-mr: 4 complete", 2
    )

    write_stages([Stage("mr", "report", 3.0, "running (since 2026-01-01 00:00:00)")], path)
    assert StageJournal(path, PLAN).stages  # a report killed while it ran did not end the run


def test_a_full_disk_costs_the_running_record_with_one_warning_not_one_a_minute(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    import errno
    import time

    from benchmark import stage_times

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stage_times, "HEARTBEAT_S", 0.02)
    monkeypatch.setattr(stage_times, "write_stages", full)
    journal = StageJournal(tmp_path / "reproduce.stages.csv", PLAN)
    with journal.timed("mr", "layer-sweep") as outcome:
        time.sleep(0.3)  # many heartbeats, each failing
        outcome.append("layer-sweep-mr: 4 complete")
    warnings = [r for r in caplog.records if "could not write the stage times" in r.getMessage()]
    assert len(warnings) == 2  # the heartbeats' first failure, then the stage's own end
    (sweep,) = journal.stages  # the run goes on, and keeps its times in memory
    assert (sweep.outcome, sweep.sittings) == ("layer-sweep-mr: 4 complete", 1) and sweep.seconds >= 0.3
