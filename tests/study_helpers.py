"""Shared by the study tests: tiny-study configs, run/trial checks, the CLI and HTTP-server helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.core import tracking
from benchmark.core.config import BenchConfig, load_config
from benchmark.core.optuna_store import make_storage
from benchmark.core.study_data import ModelDirs, StudyData

FAST_TRAIN = {
    "train.max_epochs": 3,
    "train.patience": 0,
    "train.batch_size": 8,
    "train.hidden_dims": (16,),
    "train.proj_dim": 16,
}


def study_cfg(env: dict[str, str], tmp: Path, preset: str, models: tuple[str, ...], **extra: object) -> BenchConfig:
    values = {
        "paths.cache_dir": env["cache"],
        "extract.dataset": env["data"],
        "extract.models": models,
        "extract.dtype": "fp32",
        "extract.device": "cpu",
        "extract.show_progress": False,
        "study.preset": preset,
        "study.storage": f"sqlite:///{tmp}/optuna.db",
        "study.pruning": False,
        "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
        "tracking.artifact_root": str(tmp / "artifacts"),
        **FAST_TRAIN,
    }
    values.update(extra)
    return load_config(env={}, **values)


def child_runs(mlc: MlflowClient, study: str, kind: str = "trial") -> list:
    exps = [e.experiment_id for e in mlc.search_experiments()]
    return mlc.search_runs(
        exps, f"tags.`{tracking.TAG_STUDY}` = '{study}' and tags.`{tracking.TAG_KIND}` = '{kind}'", max_results=1000
    )


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(storage, 1))


def assert_run_equals_trial(
    t: optuna.trial.FrozenTrial, params: dict, metrics: dict, tags: dict, parent_id: str
) -> None:
    """One trial's run, read back through any client: its tags, every Optuna param, and the four scores."""
    assert tags[tracking.TAG_TRIAL] == str(t.number)
    assert tags[tracking.TAG_STATE] == t.state.name
    assert tags[tracking.TAG_PARENT] == parent_id
    logged = {k.removeprefix("optuna."): v for k, v in params.items() if k.startswith("optuna.")}
    assert logged == {k: str(v) for k, v in t.params.items()}, t.number
    if t.state == optuna.trial.TrialState.COMPLETE:
        expected = {
            "val/acc": t.value,
            "val/f1": t.user_attrs["val_f1"],
            "test/acc": t.user_attrs["test_acc"],
            "test/f1": t.user_attrs["test_f1"],
        }
        assert {k: metrics[k] for k in expected} == pytest.approx(expected)


def assert_runs_match_trials(cfg: BenchConfig, name: str) -> tuple[optuna.Study, list]:
    study = load(cfg.study.storage, name)
    mlc = MlflowClient(cfg.tracking.uri)
    runs = {r.info.run_id: r for r in child_runs(mlc, name)}
    trials = study.get_trials(deepcopy=False)
    assert len(runs) == len(trials)  # one run per trial, no more
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # every trial number exactly once
    parents = child_runs(mlc, name, "study")
    assert [p.info.run_id for p in parents] == [study.user_attrs["mlflow_parent_run_id"]]  # one parent run
    for t in trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert_run_equals_trial(t, run.data.params, run.data.metrics, run.data.tags, parents[0].info.run_id)
    return study, list(runs.values())


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_base(env: dict[str, str], tmp: Path) -> list[str]:
    return [
        "--dataset",
        env["data"],
        "--storage",
        f"sqlite:///{tmp}/optuna.db",
        "--no-progress",
        "--set",
        f"paths.cache_dir={env['cache']}",
        "--set",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        "--set",
        f"tracking.artifact_root={tmp}/artifacts",
        "--set",
        "extract.dtype=fp32",
        "--set",
        "extract.device=cpu",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, proc: subprocess.Popen, seconds: float = 300) -> bytes:
    """The body of ``url`` once the server ``proc`` answers; fails if it exits or stays silent for ``seconds``.

    A deadline, not a count of tries: on a loaded 2-core machine the MLflow server has taken over a minute to start.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode} before answering {url}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing answered {url} within {seconds:.0f} s") from None
            time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> str:
    """SIGTERM the server's process group (it and its web workers), SIGKILL after 60 s; its output, if piped."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)[0] or ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[0] or ""


def study_argv(
    env: dict[str, str], storage: str, tracking_uri: str, artifacts: Path, trials: int, name: str, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark",
        "study",
        "--preset",
        "search",
        "--models",
        f"{env['a']},{env['b']}",
        "--dataset",
        env["data"],
        "--trials",
        str(trials),
        "--name",
        name,
        "--storage",
        storage,
        "--no-pruning",
        "--no-progress",
        "--set",
        f"paths.cache_dir={env['cache']}",
        "--set",
        f"tracking.uri={tracking_uri}",
        "--set",
        f"tracking.artifact_root={artifacts}",
        "--set",
        "extract.dtype=fp32",
        "--set",
        "extract.device=cpu",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.hidden_dims=16",
        *extra,
    ]


def models_only(dirs: dict[str, ModelDirs]) -> StudyData:
    """What a study reads, with the caches ``dirs`` and no texts read (for the steps that read the caches only)."""
    return StudyData("toy", "toy", {}, None, dirs)
