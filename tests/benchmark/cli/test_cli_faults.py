"""CLI faults end in one line: a UI port in use, Ctrl-C on the UI, library faults, errors printed first and alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from fault_helpers import REPO, one_line

from benchmark.cli import main


def test_ui_refuses_a_port_in_use(tmp_path, monkeypatch, capsys) -> None:
    """Item 4: a real listening socket on the port; the UI says so before creating its store or starting."""
    for name in ("execv", "execve"):
        monkeypatch.setattr(os, name, lambda *a: pytest.fail(f"the UI started: {a}"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["ui", "--port", str(port), "--set", f"tracking.uri=sqlite:///{tmp_path}/ui/mlflow.db"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --port {port + 1}" in err
    assert not (tmp_path / "ui").exists()


def test_ctrl_c_on_ui_stops_the_server_once_without_a_traceback(tmp_path, monkeypatch, capsys) -> None:
    """The server runs in its own session: Ctrl-C reaches layerfuse, which sends it one SIGINT and exits 0."""
    import threading

    from benchmark.cli import browse

    ready, got = tmp_path / "ready", tmp_path / "signals"
    server = (
        "import pathlib, signal, sys, time\n"
        "seen = []\n"
        "def stop(signum, frame):\n"
        "    seen.append(signum)\n"
        "    pathlib.Path(sys.argv[2]).write_text(str(len(seen)))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "pathlib.Path(sys.argv[1]).write_text('up')\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setattr(
        browse, "ui_command", lambda cfg, port, workers: [sys.executable, "-c", server, str(ready), str(got)]
    )

    def ctrl_c() -> None:
        deadline = time.monotonic() + 600  # `ui` first creates the store: a minute or more on a loaded machine
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal would: to layerfuse (the server is not in its group)

    # A `layerfuse ui` process starts with Python's own Ctrl-C handler; an earlier test of this session may have left
    # another one installed (a SIGINT then never reached `serve`, and the fake server slept its 60 s out).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctrl_c, daemon=True).start()
    port = _free_port()
    try:
        assert main(["ui", "--port", str(port), "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    out, err = capsys.readouterr()
    assert got.read_text() == "1" and "UI stopped" in out and "Traceback" not in err and err == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_faults_deep_inside_libraries_are_named_in_one_line(monkeypatch, capsys) -> None:
    """Own case: SQLite's "disk is full" wrapped by SQLAlchemy, and a permission error, end in one line; a bug
    (any other exception) keeps its traceback."""
    import errno
    import sqlite3

    import sqlalchemy

    from benchmark.cli import browse

    def raising(err: BaseException):
        def handler(args: object, cfg: object) -> int:
            raise err

        return handler

    full = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/cache/x.npy")
    for err, needle in ((full, "no space left for the database"), (denied, "cannot write /srv/cache/x.npy")):
        monkeypatch.setattr(browse, "_run_ls", raising(err))
        assert main(["ls", "models"]) == 2
        assert "rerun the same command" in one_line(capsys.readouterr().err, needle)
    monkeypatch.setattr(browse, "_run_ls", raising(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        main(["ls", "models"])


def test_export_refit_and_predict_print_their_error_first_and_alone(tmp_path) -> None:
    """Real processes (pytest hides warnings in-process): no MLflow or Optuna warning, no colour code, one line."""
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="other", storage=storage)
    stores = ["--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "--storage", storage]
    commands = {
        "export": ["export", "--study", "nope", *stores],
        "refit": ["refit", "--study", "nope", *stores],
        "predict": ["predict", "--model", f"{tmp_path}/no-model", "--input", str(REPO / "README.md"), "--out", "x.csv"],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "benchmark", *argv],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in commands.items()
    }
    needles = {"export": "no study 'nope'", "refit": "no study 'nope'", "predict": "unknown format .md"}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, (name, err)
        line = one_line(err, needles[name])
        assert line.startswith("layerfuse: error:") and "\x1b[" not in err, (name, err)
