"""SIGTERM is an interrupt inside a command, leftovers of dead processes go, and two processes share one new store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from fault_helpers import REPO, dead_pid


def test_sigterm_is_an_interrupt_inside_a_command(tmp_path) -> None:
    """The mechanism behind `study` and `report` under SIGTERM: the run ends KILLED, as with Ctrl-C."""
    from mlflow.tracking import MlflowClient

    from benchmark.core import tracking
    from benchmark.core.config_sections import TrackingConfig
    from benchmark.core.faults import interrupt_on_sigterm

    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"))
    mlc = tracking.client(cfg)
    exp = tracking.ensure_experiment(mlc, "layerfuse/term", cfg)
    with pytest.raises(KeyboardInterrupt), interrupt_on_sigterm():
        with tracking.tracked_run(mlc, exp, "r", tracking.KIND_REPORT, cfg) as run_id:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            pytest.fail("SIGTERM did not interrupt")
    assert MlflowClient(tracking_uri=cfg.uri).get_run(run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_an_interrupt_landing_in_a_garbage_collector_callback_is_not_lost() -> None:
    """Own case: Python ignores an exception raised in a weakref callback; the signal is raised again after it."""
    import weakref

    from benchmark.core.faults import interrupt_on_sigterm

    class Thing:
        pass

    def callback(ref: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, inside the callback, where raising is ignored
        sum(range(1000))

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupt_on_sigterm():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        for _ in range(200):
            time.sleep(0.01)
        pytest.fail(f"the interrupt was lost ({ref})")


def test_an_error_raised_while_an_interrupt_is_handled_counts_as_the_interrupt() -> None:
    from benchmark.core.faults import caused_by_interrupt

    def raised(make: Callable[[], None]) -> BaseException:
        try:
            make()
        except BaseException as err:  # noqa: BLE001 - the test inspects what came out
            return err
        raise AssertionError("nothing raised")

    def clean_up_fails() -> None:
        try:
            raise KeyboardInterrupt("signal SIGTERM")
        finally:
            raise RuntimeError("INTERNAL ASSERT FAILED")  # a library's clean-up, broken by the signal

    def wrapped() -> None:
        try:
            clean_up_fails()
        except RuntimeError as err:
            raise OSError("while closing") from err

    def plain() -> None:
        try:
            raise ValueError("bad")
        except ValueError as err:
            raise RuntimeError("worse") from err

    assert caused_by_interrupt(KeyboardInterrupt())
    assert caused_by_interrupt(raised(clean_up_fails)) and caused_by_interrupt(raised(wrapped))
    assert not caused_by_interrupt(raised(plain)) and not caused_by_interrupt(ValueError())
    loop = RuntimeError("a")
    loop.__context__ = RuntimeError("b")
    loop.__context__.__context__ = loop  # a cycle ends the walk
    assert not caused_by_interrupt(loop)


def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path) -> None:
    """What killed reports and predictions leave (``.NAME.tmp-PID``) goes once PID is dead; a live one's stays."""
    from benchmark.core.faults import remove_stale

    dead = tmp_path / f".mr.tmp-{dead_pid()}"
    live = tmp_path / f".mr.tmp-{os.getppid()}"
    mine = tmp_path / f".mr.tmp-{os.getpid()}"
    other = tmp_path / ".mr.tmp-notapid"
    for folder in (dead, live, mine, other):
        (folder / "sub").mkdir(parents=True)
    stale_file = tmp_path / f".scored.csv.tmp-{dead_pid()}"
    stale_file.write_text("half")
    assert sorted(remove_stale(tmp_path, ".*.tmp-*")) == sorted([dead, stale_file])
    assert live.is_dir() and mine.is_dir() and other.is_dir()


def test_two_commands_create_one_fresh_mlflow_store_at_once(tmp_path) -> None:
    """Two processes set up the same new SQLite store together; the setup lock lets both succeed."""
    script = (
        "import sys, time\n"
        "from benchmark.core import tracking\n"
        "from benchmark.core.config_sections import TrackingConfig\n"
        "cfg = TrackingConfig(uri=sys.argv[1], artifact_root=sys.argv[2])\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # start together\n"
        "mlc = tracking.client(cfg)\n"
        "print(tracking.ensure_experiment(mlc, 'layerfuse/race', cfg))\n"
    )
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    start = str(time.time() + 8)  # after both processes imported MLflow
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, uri, str(tmp_path / "art"), start],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]  # one experiment, found by both
