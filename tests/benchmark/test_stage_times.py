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
    assert got["extract"].outcome == "2 cached, 0 extracted"  # the latest sitting's
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
