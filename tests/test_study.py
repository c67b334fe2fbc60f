"""Optuna studies tracked in MLflow, end to end on tiny local models: runs equal trials, resume, bad input."""

from __future__ import annotations

import json
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

from benchmark import tracking
from benchmark.cli import main
from benchmark.config import BenchConfig, load_config
from extractors.run import extract_all
from studies.runner import run_study, study_name

FAST_TRAIN = {"train.max_epochs": 3, "train.patience": 0, "train.batch_size": 8, "train.hidden_dims": (16,),
              "train.proj_dim": 16}


@pytest.fixture(scope="module")
def study_env(tiny_models, tmp_path_factory) -> dict[str, str]:
    """Cached features of two tiny BERTs on a 60/30 text dataset, shared by the tests of this module."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("study")
    data = write_dataset(root / "data", n_train=60, n_test=30)
    env = {"data": str(data), "cache": str(root / "cache"), "a": str(tiny_models["bert-a"]), "b": str(tiny_models["bert-b"]),
           "l": str(tiny_models["llama-right"])}
    cfg = load_config(env={}, **{"extract.models": (env["a"], env["b"], env["l"]), "extract.dataset": env["data"],
                                 "extract.dtype": "fp32", "extract.device": "cpu", "paths.cache_dir": env["cache"],
                                 "extract.show_progress": False})
    extract_all(cfg)
    return env


def study_cfg(env: dict[str, str], tmp: Path, preset: str, models: tuple[str, ...], **extra: object) -> BenchConfig:
    values = {"paths.cache_dir": env["cache"], "extract.dataset": env["data"], "extract.models": models,
              "extract.dtype": "fp32", "extract.device": "cpu", "extract.show_progress": False,
              "study.preset": preset, "study.storage": f"sqlite:///{tmp}/optuna.db", "study.pruning": False,
              "tracking.uri": f"sqlite:///{tmp}/mlflow.db", "tracking.artifact_root": str(tmp / "artifacts"), **FAST_TRAIN}
    values.update(extra)
    return load_config(env={}, **values)


def child_runs(mlc: MlflowClient, study: str) -> list:
    exps = [e.experiment_id for e in mlc.search_experiments()]
    return mlc.search_runs(exps, f"tags.`{tracking.TAG_STUDY}` = '{study}' and tags.`{tracking.TAG_KIND}` = 'trial'",
                           max_results=1000)


def assert_runs_match_trials(cfg: BenchConfig, name: str) -> tuple[optuna.Study, list]:
    study = optuna.load_study(study_name=name, storage=cfg.study.storage)
    mlc = MlflowClient(cfg.tracking.uri)
    runs = {r.info.run_id: r for r in child_runs(mlc, name)}
    trials = study.get_trials(deepcopy=False)
    assert len(runs) == len(trials)  # one run per trial, no more
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # every trial number exactly once
    for t in trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags[tracking.TAG_TRIAL] == str(t.number)
        assert run.data.tags[tracking.TAG_STATE] == t.state.name
        assert run.data.tags[tracking.TAG_PARENT] == study.user_attrs["mlflow_parent_run_id"]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run.data.metrics["val/acc"] == pytest.approx(t.value)
            assert run.data.metrics["test/acc"] == pytest.approx(t.user_attrs["test_acc"])
            for key, value in t.params.items():
                if key.startswith("train."):
                    continue
                if key in ("fusion",):
                    assert run.data.params[key] == str(value)
    return study, list(runs.values())


def test_search_study_end_to_end(study_env, tmp_path) -> None:
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]), **{"study.trials": 5})
    out = run_study(cfg)
    assert out.complete + out.pruned == 5
    study, runs = assert_runs_match_trials(cfg, out.name)
    complete = [r for r in runs if r.data.tags[tracking.TAG_STATE] == "COMPLETE"]
    assert complete, "no trial completed"
    for run in complete:
        m = run.data.metrics
        for name in ("val/acc", "val/f1", "test/acc", "test/f1", "perf/feature_bytes", "perf/peak_rss_mb",
                     "perf/extract_ms_per_sample", "perf/head_ms_per_sample", "perf/fit_s", "perf/param_count", "perf/fused_dim"):
            assert name in m, name
        assert 0.0 <= m["val/acc"] <= 1.0 and m["perf/param_count"] > 0 and m["perf/feature_bytes"] > 0
        assert run.data.params["preset"] == "search" and int(run.data.params["n_models"]) >= 1
        assert "git_commit" in run.data.tags and "version.torch" in run.data.tags
        artifacts = {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(run.info.run_id)}
        assert "config.yaml" in artifacts
    parent = MlflowClient(cfg.tracking.uri).get_run(out.parent_run_id)
    assert parent.data.tags[tracking.TAG_KIND] == "study" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best/val_acc"] == pytest.approx(study.best_value)
    # Resume: the same command again runs nothing new and keeps the same parent run.
    again = run_study(cfg)
    assert (again.complete, again.pruned, again.parent_run_id) == (out.complete, out.pruned, out.parent_run_id)
    assert len(optuna.load_study(study_name=out.name, storage=cfg.study.storage).trials) == 5


def test_layer_sweep_logs_accuracy_by_layer(study_env, tmp_path) -> None:
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["a"], study_env["l"]))
    out = run_study(cfg)
    assert out.complete == 2
    _, runs = assert_runs_match_trials(cfg, out.name)
    mlc = MlflowClient(cfg.tracking.uri)
    for run in runs:
        model = run.data.tags[tracking.TAG_SWEEP_MODEL]
        val = [m.value for m in sorted(mlc.get_metric_history(run.info.run_id, "sweep/val_acc"), key=lambda m: m.step)]
        assert len(val) == (3 if "bert" in model else 4)  # L+1 hidden states
        best = int(run.data.params[f"layer.{model}"])
        assert val[best] == pytest.approx(max(val)) and run.data.metrics["val/acc"] == pytest.approx(max(val))


def test_grid_presets_cover_their_grid(study_env, tmp_path) -> None:
    from lightning_modules.components.fusion import fusion_names

    cfg = study_cfg(study_env, tmp_path, "fusion-methods", (study_env["a"], study_env["b"]), **{"train.max_epochs": 1})
    out = run_study(cfg)
    study, runs = assert_runs_match_trials(cfg, out.name)
    assert sorted(t.params["fusion"] for t in study.trials) == sorted(fusion_names())
    assert set(study.user_attrs["best_layers"]) == {study_env["a"], study_env["b"]}
    cfg = study_cfg(study_env, tmp_path, "last-k", (study_env["a"],), **{"train.max_epochs": 1})
    out = run_study(cfg)
    study, _ = assert_runs_match_trials(cfg, out.name)
    assert len(study.trials) == 30  # 3 aggregations x k=1..10
    assert out.complete == 3 * 3 and out.pruned == 3 * 7  # the tiny BERT has 3 hidden states: k > 3 is pruned
    reasons = {t.user_attrs.get("prune_reason", "") for t in study.trials if t.state.name == "PRUNED"}
    assert all("fewer than k=" in r for r in reasons)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_base(env: dict[str, str], tmp: Path) -> list[str]:
    return ["--dataset", env["data"], "--storage", f"sqlite:///{tmp}/optuna.db", "--no-progress",
            "--set", f"paths.cache_dir={env['cache']}", "--set", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            "--set", f"tracking.artifact_root={tmp}/artifacts", "--set", "extract.dtype=fp32", "--set", "extract.device=cpu"]


def test_study_bad_input(study_env, tmp_path, capsys) -> None:
    base = cli_base(study_env, tmp_path)
    code, _, err = run_cli(capsys, "study", "--preset", "serch", "--models", study_env["a"], *base)
    assert code == 2 and "Did you mean 'search'?" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", "minilm-l66", *base)
    assert code == 2 and "Did you mean 'minilm-l6'?" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", "", *base)
    assert code == 2 and "extract.models is empty" in err
    code, _, err = run_cli(capsys, "study", "--preset", "multi-model", "--models", f"{study_env['a']},{study_env['b']}", *base)
    assert code == 2 and "needs at least 3 models" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", study_env["a"], *base, "--set", "extract.limit=20")
    assert code == 2 and f"run first: layerfuse extract --model {study_env['a']} --dataset {study_env['data']} --split train,test --limit 20" in err
    for line in err.splitlines():
        assert "Traceback" not in line


def test_study_cli_prints_best_and_ui_hint(study_env, tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "study", "--preset", "layer-sweep", "--models", study_env["a"], *cli_base(study_env, tmp_path),
                             "--set", "train.max_epochs=2")
    assert code == 0, err
    assert "1 complete, 0 pruned, 0 failed" in out and "best trial #0: val acc" in out and "layerfuse ui" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def study_argv(env: dict[str, str], storage: str, tracking_uri: str, artifacts: Path, trials: int, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmark", "study", "--preset", "search", "--models", f"{env['a']},{env['b']}",
            "--dataset", env["data"], "--trials", str(trials), "--name", name, "--storage", storage, "--no-pruning",
            "--no-progress", "--set", f"paths.cache_dir={env['cache']}", "--set", f"tracking.uri={tracking_uri}",
            "--set", f"tracking.artifact_root={artifacts}", "--set", "extract.dtype=fp32", "--set", "extract.device=cpu",
            "--set", "train.batch_size=8", "--set", "train.hidden_dims=16", *extra]


def test_sigkill_mid_trial_then_resume(study_env, tmp_path) -> None:
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    # Long trials (many epochs, no early stopping) so the kill lands inside one.
    argv = study_argv(study_env, storage, uri, tmp_path / "art", 3, "killme", "--set", "train.max_epochs=150",
                      "--set", "train.patience=0", "--set", "study.heartbeat=1")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_number = None
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killme", storage=storage)
        except KeyError:
            continue
        running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        if running and done:
            killed_number = running[0].number
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert killed_number is not None, "the study never reached a second trial"
    time.sleep(4)  # past the heartbeat grace period (3 beats of 1 s)
    subprocess.run(argv, check=True, timeout=600, stdout=subprocess.DEVNULL)
    study = optuna.load_study(study_name="killme", storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed_number] == "FAIL"
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3
    killed = study.trials[killed_number]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params  # retried with the same params, once
    cfg = load_config(env={}, **{"study.storage": storage, "tracking.uri": uri})
    assert_runs_match_trials(cfg, "killme")


def _pg_url() -> str | None:
    url = os.environ.get("LAYERFUSE_TEST_PG_URL", "postgresql://layerfuse:layerfuse@127.0.0.1:5432/postgres")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=2).close()
    except Exception:  # noqa: BLE001 - any failure means no server to test against
        return None
    return url


@pytest.fixture
def pg_databases() -> tuple[str, str]:
    """Two fresh PostgreSQL databases (Optuna, MLflow) on the loopback server started by .ci/services."""
    import psycopg2

    url = _pg_url()
    if url is None:
        pytest.skip("no PostgreSQL server on 127.0.0.1 (bash .ci/services starts one; or set LAYERFUSE_TEST_PG_URL)")
    suffix = f"{os.getpid()}_{int(time.time())}"
    names = [f"lf_optuna_{suffix}", f"lf_mlflow_{suffix}"]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for n in names:
            cur.execute(f"CREATE DATABASE {n}")
    base = url.rsplit("/", 1)[0]
    yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    with conn.cursor() as cur:
        for n in names:
            cur.execute(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")
    conn.close()


@pytest.mark.postgres
def test_two_workers_share_one_postgres_study(study_env, tmp_path, pg_databases) -> None:
    storage, uri = pg_databases
    argv = study_argv(study_env, storage, uri, tmp_path / "art", 6, "shared", "--set", "train.max_epochs=3")
    # The first process creates the study and its parent run; the second joins as a second host would.
    subprocess.run(argv[:argv.index("--trials") + 1] + ["1"] + argv[argv.index("--trials") + 2:], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    cfg = load_config(env={}, **{"study.storage": storage, "tracking.uri": uri})
    study, _ = assert_runs_match_trials(cfg, "shared")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 6


def test_local_workers_and_mlflow_server_rest(study_env, tmp_path) -> None:
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]),
                    **{"study.trials": 4, "study.workers": 2, "study.name": "two-local"})
    out = run_study(cfg)
    assert out.complete + out.pruned >= 4
    study, runs = assert_runs_match_trials(cfg, "two-local")
    # The same runs through a real MLflow server on loopback (REST API).
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", cfg.tracking.uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        exp = json.load(urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name="
                                               + urllib.request.quote(out.experiment)))["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 1000,
                           "filter": f"tags.`{tracking.TAG_STUDY}` = 'two-local' and tags.`{tracking.TAG_KIND}` = 'trial'"}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"})
        rest_runs = json.load(urllib.request.urlopen(req))["runs"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
        server.wait(30)
    assert len(rest_runs) == len(study.trials)
    by_trial = {int(next(t["value"] for t in r["data"]["tags"] if t["key"] == tracking.TAG_TRIAL)): r for r in rest_runs}
    for t in study.trials:
        metrics = {m["key"]: m["value"] for m in by_trial[t.number]["data"].get("metrics", [])}
        if t.state.name == "COMPLETE":
            assert metrics["val/acc"] == pytest.approx(t.value)


def test_ui_serves_the_configured_store(tmp_path) -> None:
    port = _free_port()
    uri = f"sqlite:///{tmp_path}/ui/mlflow.db"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "ui", "--port", str(port), "--set", f"tracking.uri={uri}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for _ in range(120):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("the UI did not answer on 127.0.0.1")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its web workers
        out = proc.communicate(timeout=30)[0]
    assert "Default" in body.decode()  # a fresh store answers with its default experiment
    assert f"http://127.0.0.1:{port}" in out and (tmp_path / "ui" / "mlflow.db").exists()


def test_fit_reproduces_a_search_trial(study_env, tmp_path, capsys) -> None:
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]), **{"study.trials": 3})
    run_study(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=cfg.study.storage)
    trial = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    run = MlflowClient(cfg.tracking.uri).get_run(trial.user_attrs["mlflow_run_id"])
    p = run.data.params
    argv = ["fit", "--dataset", study_env["data"], "--fusion", p["fusion"], "--set", f"paths.cache_dir={study_env['cache']}",
            "--set", "extract.dtype=fp32", "--set", "extract.device=cpu"]
    for model in p["models"].split(","):
        argv += ["--layer", f"{model}={p['layer.' + model]}"]
    for key in ("lr", "dropout", "weight_decay", "proj_dim", "batch_size", "max_epochs", "patience", "hidden_dims"):
        argv += ["--set", f"train.{key}={p['train.' + key]}"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert f"val acc {trial.value:.4f}" in out and f"test acc {trial.user_attrs['test_acc']:.4f}" in out


def test_grid_study_with_two_workers_runs_each_point_once(study_env, tmp_path) -> None:
    models = (study_env["a"], study_env["b"], study_env["l"])
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", models, **{"study.workers": 2, "study.name": "grid-2w"})
    out = run_study(cfg)
    study = optuna.load_study(study_name="grid-2w", storage=cfg.study.storage)
    # A worker that finishes first must not re-run a grid point while the other runs the last one.
    assert out.complete == len(study.trials) == 3
    assert sorted(t.params["model"] for t in study.trials) == sorted(models)
