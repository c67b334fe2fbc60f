"""A study under faults: a trial's run orphaned by a kill, SIGTERM mid-trial, stores in a read-only folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from fault_helpers import REPO, one_line, read_only, runs_of_kind

from benchmark.cli import main
from studies.trials.objective import INTERRUPTED_ATTR


def test_a_trial_run_orphaned_by_a_kill_is_closed(tmp_path) -> None:
    """Item 2: a worker killed between creating a trial's run and linking it; resume and the stale check close it."""
    import optuna

    from benchmark.core import tracking
    from benchmark.core.config_sections import TrackingConfig
    from benchmark.core.optuna_store import make_storage
    from studies.run.orphans import close_orphan_runs
    from studies.run.parent_run import close_stale_run
    from studies.trials.objective import StudyRuns, create_trial_run

    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    mlc = tracking.client(cfg)
    exp = tracking.ensure_experiment(mlc, "layerfuse/orphans", cfg)
    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path}/optuna.db", 1))
    parent = mlc.create_run(exp, tags={tracking.TAG_STUDY: "s", tracking.TAG_KIND: tracking.KIND_STUDY}).info.run_id
    study.set_user_attr("mlflow_parent_run_id", parent)
    runs = StudyRuns(mlc, exp, parent, "s", "search")

    def killed_in_the_window() -> tuple[optuna.Trial, str]:
        trial = study.ask()
        return trial, create_trial_run(runs, trial.number)  # the kill: mlflow_run_id is never recorded

    stale, stale_run = killed_in_the_window()
    resumed, resumed_run = killed_in_the_window()
    alive = study.ask()
    alive_run = create_trial_run(runs, alive.number)
    alive.set_user_attr("mlflow_run_id", alive_run)

    # The stale-heartbeat callback fails the first dead trial; it has no run id, so the run is found by its tags.
    study.tell(stale, state=optuna.trial.TrialState.FAIL)
    close_stale_run(mlc)(study, study.trials[stale.number])
    assert mlc.get_run(stale_run).info.status == "FAILED"
    assert mlc.get_run(resumed_run).info.status == "RUNNING"  # its trial still counts as running
    # The second dead trial is failed (stale) before a rerun; the rerun closes what is left.
    study.tell(resumed, state=optuna.trial.TrialState.FAIL)
    assert close_orphan_runs(study, mlc, parent) == 1
    run = mlc.get_run(resumed_run)
    assert run.info.status == "FAILED" and run.data.tags[tracking.TAG_STATE] == "FAIL"
    assert "before the run was linked" in run.data.tags[tracking.TAG_ERROR]
    assert mlc.get_run(alive_run).info.status == "RUNNING"  # a live trial's run is left alone
    assert close_orphan_runs(study, mlc, parent) == 0


@pytest.mark.parametrize("setting", ["tracking.uri", "study.storage", "journal", "tracking.artifact_root"])
def test_stores_in_a_read_only_folder_fail_fast_in_one_line(setting, tmp_path, capsys) -> None:
    """No 170 s of SQLite retries: the unwritable folder is named before anything connects (journal: own case)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    value = {
        "tracking.uri": f"sqlite:///{locked}/mlflow.db",
        "study.storage": f"sqlite:///{locked}/optuna.db",
        "journal": f"journal:{locked}/study.log",
        "tracking.artifact_root": str(locked / "artifacts"),
    }[setting]
    key = "study.storage" if setting == "journal" else setting
    argv = [
        "study",
        "--preset",
        "search",
        "--models",
        "minilm-l6",
        "--dataset",
        str(tmp_path),
        "--set",
        f"{key}={value}",
    ]
    if key != "tracking.uri":
        argv += ["--set", f"tracking.uri=sqlite:///{tmp_path}/ok/mlflow.db"]
    start = time.monotonic()
    with read_only(locked):
        assert main(argv) == 2
    one_line(capsys.readouterr().err, f"cannot write in {locked}")
    # Far below the ~170 s SQLite spends retrying an unwritable folder, with room for a loaded CI machine.
    assert time.monotonic() - start < 90 and not list(locked.iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_on_a_study_closes_its_runs_as_ctrl_c_does(tiny_models, tmp_path, workers) -> None:
    """SIGTERM while a trial trains: exit 130 with one line (no worker's traceback), the trials' runs and the study's
    parent run closed, none RUNNING."""
    from conftest import write_dataset
    from mlflow.tracking import MlflowClient

    data = write_dataset(tmp_path / "data", n_train=60, n_test=8)
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path}/mlflow.db"
    extract = ["extract", "--model", str(tiny_models["bert-a"]), "--dataset", str(data), "--device", "cpu"]
    assert main([*extract, "--dtype", "fp32", "--no-progress", "--set", f"paths.cache_dir={cache}"]) == 0
    argv = ["study", "--preset", "search", "--models", str(tiny_models["bert-a"]), "--dataset", str(data)]
    argv += ["--trials", "50", "--storage", f"sqlite:///{tmp_path}/optuna.db", "--no-progress", "--no-pruning"]
    for key, value in {
        "extract.dtype": "fp32",
        "extract.device": "cpu",
        "paths.cache_dir": cache,
        "tracking.uri": uri,
        "tracking.artifact_root": tmp_path / "art",
        "train.max_epochs": 100000,  # a trial trains until the signal comes
        "train.patience": 100000,
        "study.workers": workers,
    }.items():
        argv += ["--set", f"{key}={value}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not _running_trials(tmp_path / "optuna.db"):
            time.sleep(0.5)  # read from Optuna's tables with sqlite3: an MLflow client here would race the setup
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # only if it is still running: a failed test leaves no study training forever
    assert proc.returncode == 130 and "Traceback" not in err and "failed with" not in err, err
    assert err.strip().splitlines()[-1] == "layerfuse: interrupted; rerun the same command to resume"
    mlc = MlflowClient(tracking_uri=uri)
    runs = runs_of_kind(uri, "trial") + runs_of_kind(uri, "study")
    assert len(runs) >= 2 and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parent = next(r for r in runs if r.data.tags["layerfuse.run_kind"] == "study")
    assert mlc.get_run(parent.info.run_id).info.status == "KILLED"
    # The stopped trial is FAIL and marked interrupted: reruns retry it without using up its retries for errors.
    (study_name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path}/optuna.db")
    trials = optuna.load_study(study_name=study_name, storage=f"sqlite:///{tmp_path}/optuna.db").trials
    stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert 1 <= len(stopped) <= workers and all(t.user_attrs[INTERRUPTED_ATTR] is True for t in stopped)


def _running_trials(db: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0
