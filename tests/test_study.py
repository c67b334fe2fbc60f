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

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.core import tracking
from benchmark.core.config import BenchConfig, load_config
from studies.choice.val_record import client_blob, read_sweep_rows
from studies.run.runner import run_study, study_name
from studies.run.storage import make_storage

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


def test_search_study_end_to_end(study_env, tmp_path) -> None:
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]), **{"study.trials": 5})
    out = run_study(cfg)
    assert out.complete + out.pruned == 5
    study, runs = assert_runs_match_trials(cfg, out.name)
    complete = [r for r in runs if r.data.tags[tracking.TAG_STATE] == "COMPLETE"]
    assert complete, "no trial completed"
    for run in complete:
        m = run.data.metrics
        for name in (
            "val/acc",
            "val/f1",
            "test/acc",
            "test/f1",
            "perf/feature_bytes",
            "perf/peak_rss_mb",
            "perf/extract_ms_per_sample",
            "perf/head_ms_per_sample",
            "perf/fit_s",
            "perf/param_count",
            "perf/fused_dim",
        ):
            assert name in m, name
        assert 0.0 <= m["val/acc"] <= 1.0 and m["perf/param_count"] > 0 and m["perf/feature_bytes"] > 0
        assert run.data.params["preset"] == "search" and int(run.data.params["n_models"]) >= 1
        assert "version.torch" in run.data.tags and run.data.tags["mlflow.source.type"] == "LOCAL"
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
    from benchmark.core.cache import FeatureCache
    from lightning_modules.components.classifier import MLPHead
    from studies.run.caches import resolve_dirs

    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["a"], study_env["l"]))
    out = run_study(cfg)
    assert out.complete == 2
    _, runs = assert_runs_match_trials(cfg, out.name)
    mlc = MlflowClient(cfg.tracking.uri)
    dirs = resolve_dirs(cfg)
    for run in runs:
        model = run.data.tags[tracking.TAG_SWEEP_MODEL]
        val = [m.value for m in sorted(mlc.get_metric_history(run.info.run_id, "sweep/val_acc"), key=lambda m: m.step)]
        assert len(val) == (3 if "bert" in model else 4)  # L+1 hidden states
        best = int(run.data.params[f"layer.{model}"])
        assert val[best] == pytest.approx(max(val)) and run.data.metrics["val/acc"] == pytest.approx(max(val))
        m = run.data.metrics
        # The sweep's costs: every layer's train/val/test rows read at least once, the chosen layer's head.
        cache = FeatureCache(dirs[model].train)
        width = cache.meta["hidden_size"]
        head = MLPHead(width, cfg.train.hidden_dims, 2, 0.0, 0)
        assert m["perf/param_count"] == sum(p.numel() for p in head.parameters())
        assert m["perf/fused_dim"] == width
        assert m["perf/feature_bytes"] >= len(val) * 90 * width * 2  # 60 train + 30 test fp16 rows of every layer
        assert m["perf/fit_s"] > 0 and m["perf/head_ms_per_sample"] > 0 and m["perf/peak_rss_mb"] > 50
        assert "perf/cuda_peak_mb" not in m  # CPU only
        # Per-row validation predictions of every layer (60 train rows: one split of 10% = 6 rows x 1 seed here) and
        # each layer's computed cost, growing with depth; the chosen layer's cost as the run's.
        rows = read_sweep_rows(client_blob(mlc, run.info.run_id, tracking.SWEEP_ROWS_ARTIFACT))
        assert rows is not None and len(rows) == len(val)
        assert all(np.array_equal(r.rows, rows[0].rows) and r.rows.size == r.pred.size > 0 for r in rows)
        flops = {p.step: p.value for p in mlc.get_metric_history(run.info.run_id, tracking.SWEEP_GFLOPS)}
        assert list(flops) == list(range(len(val))) and all(flops[i] < flops[i + 1] for i in range(len(val) - 1))
        assert m[tracking.PERF_INFER_GFLOPS] == pytest.approx(flops[best])
    parent = mlc.get_run(runs[0].data.tags[tracking.TAG_PARENT])
    shift = json.loads(client_blob(mlc, parent.info.run_id, tracking.SHIFT_ARTIFACT))
    assert shift["auc"] == pytest.approx(parent.data.metrics[tracking.SHIFT_AUC]) and 0 <= shift["auc"] <= 1
    assert shift["lengths"]["train"]["n"] == 60 and shift["features"].endswith("@1")


def test_cuda_peak_is_the_largest_over_seeds() -> None:
    from studies.trials.objective import max_peak

    assert max_peak([{"perf/cuda_peak_mb": 30.0}, {"perf/cuda_peak_mb": 10.0}]) == {"perf/cuda_peak_mb": 30.0}
    assert max_peak([{}, {}]) == {}


def test_grid_presets_cover_their_grid(study_env, tmp_path, monkeypatch) -> None:
    import studies.run.runner
    from lightning_modules.fusion_index import fusion_names
    from studies.run.pruning import GroupedPruner

    pruners = []  # what each study was opened with: grids group their pruner by pair / by model
    make = studies.run.runner.make_pruner

    def recorded(*args: object) -> object:
        pruners.append(make(*args))
        return pruners[-1]

    monkeypatch.setattr(studies.run.runner, "make_pruner", recorded)
    grid = {"train.max_epochs": 1, "study.pruning": True}  # median pruning from epoch 5: never reached here
    cfg = study_cfg(study_env, tmp_path, "fusion-methods", (study_env["a"], study_env["b"]), **grid)
    out = run_study(cfg)
    study, runs = assert_runs_match_trials(cfg, out.name)
    assert sorted(t.params["fusion"] for t in study.trials) == sorted(fusion_names())
    assert set(study.user_attrs["best_layers"]) == {study_env["a"], study_env["b"]}
    cfg = study_cfg(study_env, tmp_path, "last-k", (study_env["a"],), **grid, **{"study.max_k": 4})
    out = run_study(cfg)
    study, _ = assert_runs_match_trials(cfg, out.name)
    assert len(study.trials) == 12  # 3 aggregations x k=1..4
    assert out.complete == 3 * 3 and out.pruned == 3 * 1  # the tiny BERT has 3 hidden states: k > 3 is pruned
    reasons = {t.user_attrs.get("prune_reason", "") for t in study.trials if t.state.name == "PRUNED"}
    assert all("fewer than k=" in r for r in reasons)
    assert [(type(p), p.keys) for p in pruners] == [(GroupedPruner, ("pair",)), (GroupedPruner, ("model",))]


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


def test_study_bad_input(study_env, tmp_path, capsys) -> None:
    base = cli_base(study_env, tmp_path)
    code, _, err = run_cli(capsys, "study", "--preset", "serch", "--models", study_env["a"], *base)
    assert code == 2 and "Did you mean 'search'?" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", "minilm-l66", *base)
    assert code == 2 and "Did you mean 'minilm-l6'?" in err
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", "", *base)
    assert code == 2 and "extract.models is empty" in err
    code, _, err = run_cli(
        capsys, "study", "--preset", "multi-model", "--models", f"{study_env['a']},{study_env['b']}", *base
    )
    assert code == 2 and "needs at least 3 models" in err
    code, _, err = run_cli(
        capsys, "study", "--preset", "search", "--models", study_env["a"], *base, "--set", "extract.limit=20"
    )
    assert (
        code == 2
        and f"run first: layerfuse extract --model {study_env['a']} --dataset {study_env['data']} "
        "--split train,test --limit 20"
        in err
    )
    base[base.index("--dataset") + 1] = "no-such-data"
    code, _, err = run_cli(capsys, "study", "--preset", "search", "--models", study_env["a"], *base)
    assert code == 2 and "no-such-data" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys,
        "study",
        "--preset",
        "search",
        "--models",
        study_env["a"],
        *cli_base(study_env, tmp_path),
        "--set",
        "study.pruner=mediam",
    )
    assert code == 2 and "study.pruner='mediam'" in err and "threshold:X" in err
    for line in err.splitlines():
        assert "Traceback" not in line


def test_missing_cache_message_runs_as_printed(study_env, tmp_path, capsys, monkeypatch) -> None:
    """The printed extract command, run as printed, creates exactly the missing cache (paths and columns kept)."""
    import csv
    import shlex

    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's default cache
    data = tmp_path / "datasets" / "r8"  # the built-in name, read from a non-default paths.data_dir
    data.mkdir(parents=True)
    for split in ("train", "test"):  # the fixture texts under a non-default text column
        rows = list(csv.reader((Path(study_env["data"]) / f"{split}.csv").open()))
        rows[0] = ["body", "label"]
        with (data / f"{split}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    argv = [
        "study",
        "--preset",
        "layer-sweep",
        "--models",
        study_env["a"],
        "--dataset",
        "r8",
        "--no-progress",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "--set",
        f"tracking.artifact_root={tmp_path}/artifacts",
        "--set",
        f"paths.data_dir={tmp_path / 'datasets'}",
        "--set",
        f"paths.cache_dir={tmp_path / 'new cache'}",
        "--set",
        "data.text_column=body",
        "--set",
        "extract.dtype=fp32",
        "--set",
        "extract.device=cpu",
        "--set",
        "train.max_epochs=1",
    ]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "run first: " in err
    printed = shlex.split(err.split("run first: ", 1)[1])
    assert printed[:2] == ["layerfuse", "extract"]
    code, out, err = run_cli(capsys, *printed[1:], "--no-progress")
    assert code == 0, err
    assert "0 cached, 2 new" in out and (tmp_path / "new cache").is_dir()
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "1 complete" in out


def test_study_cli_prints_best_and_ui_hint(study_env, tmp_path, capsys) -> None:
    code, out, err = run_cli(
        capsys,
        "study",
        "--preset",
        "layer-sweep",
        "--models",
        study_env["a"],
        *cli_base(study_env, tmp_path),
        "--set",
        "train.max_epochs=2",
    )
    assert code == 0, err
    assert "1 complete, 0 pruned, 0 failed" in out and "best trial #0: val acc" in out and "layerfuse ui" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_http(url: str, proc: subprocess.Popen, seconds: float = 300) -> bytes:
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


def _stop_server(proc: subprocess.Popen) -> str:
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


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("journal", marks=pytest.mark.slow)])  # ~1 min each under load
def test_sigkill_mid_trial_then_resume(study_env, tmp_path, kind) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db" if kind == "sqlite" else f"journal:{tmp_path}/optuna.log"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Long trials (many epochs, no early stopping) so the kill lands inside one.
    argv = study_argv(
        study_env,
        storage,
        uri,
        tmp_path / "art",
        3,
        "killme",
        "--set",
        "train.max_epochs=150",
        "--set",
        "train.patience=0",
        "--set",
        "study.heartbeat=1",
        # What is tested is the kill and the retry: no refit, and concat heads only, which train fastest.
        "--set",
        "study.refit=false",
        "--set",
        "study.fusions=concat",
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_number = None
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            study = load(storage, "killme")
        except KeyError:
            continue
        running = [
            t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs
        ]
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        if running and done:
            time.sleep(1)  # into the fit: its params are logged (a fit of 150 epochs lasts far longer)
            killed_number = running[0].number
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert killed_number is not None, "the study never reached a second trial"
    # Rerun at once, within the heartbeat grace period: the dead trial still looks RUNNING.
    subprocess.run(argv, check=True, timeout=600, stdout=subprocess.DEVNULL)
    study = load(storage, "killme")
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed_number] == "FAIL"
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3
    killed = study.trials[killed_number]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params  # retried with the same params, once
    assert retries[0].user_attrs["retry_of"] == killed_number and retries[0].state.name in ("COMPLETE", "PRUNED")
    cfg = load_config(env={}, **{"study.storage": storage, "tracking.uri": uri})
    assert_runs_match_trials(cfg, "killme")
    run = MlflowClient(uri).get_run(killed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "heartbeat" in run.data.tags["layerfuse.error"]


def test_failed_trial_fails_the_parent_then_is_retried(study_env, tmp_path) -> None:
    import shutil

    from studies.run.caches import resolve_dirs

    cache = tmp_path / "cache"
    shutil.copytree(study_env["cache"], cache)
    cfg = study_cfg(
        study_env, tmp_path, "layer-sweep", (study_env["a"],), **{"paths.cache_dir": str(cache), "train.max_epochs": 1}
    )
    labels_file = resolve_dirs(cfg)[study_env["a"]].train / "labels.npy"
    labels = np.load(labels_file)
    bad = labels.copy()
    bad[0] = 99  # a corrupt label (same size and shape, so the cache still validates): training raises
    np.save(labels_file, bad)
    with pytest.raises(IndexError, match="out of bounds"):
        run_study(cfg)
    mlc = MlflowClient(cfg.tracking.uri)
    study = load(cfg.study.storage, study_name(cfg))
    assert [t.state.name for t in study.trials] == ["FAIL"]
    parent = mlc.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and "out of bounds" in parent.data.tags["layerfuse.error"]
    failed_run = mlc.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert failed_run.info.status == "FAILED" and "out of bounds" in failed_run.data.tags["layerfuse.error"]
    np.save(labels_file, labels)  # repaired
    out = run_study(cfg)  # the rerun retries the failed trial with its params (its grid point)
    study = load(cfg.study.storage, study_name(cfg))
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"] and out.complete == 1
    assert study.trials[1].params == study.trials[0].params
    assert (study.trials[1].user_attrs["retry_of"], study.trials[1].user_attrs["retry"]) == (0, 1)
    parent = mlc.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED" and "layerfuse.error" not in parent.data.tags
    assert_runs_match_trials(cfg, study_name(cfg))


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
    # Cold start: two hosts launch the same command on a study that does not exist yet.
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    cfg = load_config(env={}, **{"study.storage": storage, "tracking.uri": uri})
    study, _ = assert_runs_match_trials(cfg, "shared")  # one parent run, one run per trial
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 6 and states.count("FAIL") == 0


def test_local_workers_and_mlflow_server_rest(study_env, tmp_path) -> None:
    cfg = study_cfg(
        study_env,
        tmp_path,
        "search",
        (study_env["a"], study_env["b"]),
        **{"study.trials": 4, "study.workers": 2, "study.name": "two-local"},
    )
    out = run_study(cfg)
    assert (out.complete + out.pruned, out.failed) == (4, 0)
    study, runs = assert_runs_match_trials(cfg, "two-local")
    # The same runs through a real MLflow server on loopback (REST API).
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            cfg.tracking.uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{base}/health", server)
        exp = json.load(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + urllib.request.quote(out.experiment)
            )
        )["experiment"]
        body = json.dumps(
            {
                "experiment_ids": [exp["experiment_id"]],
                "max_results": 1000,
                "filter": f"tags.`{tracking.TAG_STUDY}` = 'two-local' and tags.`{tracking.TAG_KIND}` = 'trial'",
            }
        ).encode()
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
        )
        rest_runs = json.load(urllib.request.urlopen(req))["runs"]
    finally:
        _stop_server(server)
    assert len(rest_runs) == len(study.trials)

    def pairs(run: dict, key: str) -> dict:
        return {x["key"]: x["value"] for x in run["data"].get(key, [])}

    by_trial = {int(pairs(r, "tags")[tracking.TAG_TRIAL]): r for r in rest_runs}
    for t in study.trials:
        r = by_trial[t.number]
        assert r["info"]["run_id"] == t.user_attrs["mlflow_run_id"]
        assert_run_equals_trial(t, pairs(r, "params"), pairs(r, "metrics"), pairs(r, "tags"), out.parent_run_id)


def test_fit_reproduces_a_search_trial(study_env, tmp_path, capsys) -> None:
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]), **{"study.trials": 3})
    run_study(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=cfg.study.storage)
    trial = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    run = MlflowClient(cfg.tracking.uri).get_run(trial.user_attrs["mlflow_run_id"])
    p = run.data.params
    argv = [
        "fit",
        "--dataset",
        study_env["data"],
        "--fusion",
        p["fusion"],
        "--set",
        f"paths.cache_dir={study_env['cache']}",
        "--set",
        "extract.dtype=fp32",
        "--set",
        "extract.device=cpu",
        "--set",
        f"tracking.uri={cfg.tracking.uri}",
        "--set",
        f"tracking.artifact_root={cfg.tracking.artifact_root}",
    ]
    for model in p["models"].split(","):
        argv += ["--layer", f"{model}={p['layer.' + model]}"]
    for key in ("lr", "dropout", "weight_decay", "proj_dim", "batch_size", "max_epochs", "patience", "hidden_dims"):
        argv += ["--set", f"train.{key}={p['train.' + key]}"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert f"val acc {trial.value:.4f}" in out and f"test acc {trial.user_attrs['test_acc']:.4f}" in out
    # The same batched fit (fit_units) as the trial: its numbers exactly, not only to 4 decimals.
    mlc = MlflowClient(cfg.tracking.uri)
    fits = mlc.search_runs([run.info.experiment_id], f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_FIT}'")
    assert len(fits) == 1
    assert fits[0].data.metrics[tracking.VAL_ACC] == run.data.metrics[tracking.VAL_ACC] == trial.value
    assert fits[0].data.metrics[tracking.TEST_ACC] == run.data.metrics[tracking.TEST_ACC]


def test_fit_reproduces_a_cross_validated_trial(study_env, tmp_path, capsys) -> None:
    """The report's re-train command of a 3-fold x 2-seed trial logs the trial's units again, value for value.

    Trial and fit make the same ``fit_units`` call on the same units, so every number is equal, not just close.
    """
    import shlex

    from benchmark.report.best.reproduce import command
    from benchmark.report.common.runs import load_runs

    cv = {"data.cv_folds": 3, "study.seeds": 2, "study.trials": 2, "study.name": "cv-fit"}
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]), **cv)
    run_study(cfg)
    data = load_runs(cfg, ["cv-fit"], [])
    row = data.trials.sort_values("val/acc", ascending=False).iloc[0]  # a COMPLETE trial
    mlc = MlflowClient(cfg.tracking.uri)
    trial_run = row["run_id"]
    config = data.artifact(trial_run, tracking.CONFIG_ARTIFACT)
    argv = shlex.split(command(row, config.decode()))
    assert "data.cv_folds=3" in argv and argv[argv.index("--seeds") + 1] == "2"
    sets = [f"tracking.uri={cfg.tracking.uri}", f"tracking.artifact_root={cfg.tracking.artifact_root}"]
    code, out, err = run_cli(capsys, *argv[1:], *(a for s in sets for a in ("--set", s)))
    assert code == 0, err
    printed = [line.split(":")[0] for line in out.splitlines() if line.startswith("fold ")]
    assert printed == [f"fold {f} seed {cfg.train.seed + s}" for f in range(3) for s in range(2)]
    assert "over 6 units (fold x seed)" in out
    experiment = mlc.get_run(trial_run).info.experiment_id
    (fit,) = mlc.search_runs([experiment], f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_FIT}'")
    fit_run = fit.info.run_id

    def history(run_id: str, name: str) -> list[float]:
        return [m.value for m in sorted(mlc.get_metric_history(run_id, name), key=lambda m: m.step)]

    for name in (tracking.CV_VAL_ACC, *tracking.SEED_HISTORIES):
        assert len(history(trial_run, name)) == 6  # 3 folds x 2 seeds
        assert history(fit_run, name) == history(trial_run, name), name
    assert len(set(history(fit_run, tracking.CV_VAL_ACC))) > 1  # the units differ
    scores = (*tracking.METRICS, tracking.VAL_ACC_SE, tracking.VAL_LOSS, tracking.PERF_BEST_EPOCH)
    assert {k: fit.data.metrics[k] for k in scores} == {k: mlc.get_run(trial_run).data.metrics[k] for k in scores}
    assert fit.data.metrics[tracking.VAL_ACC_SE] > 0
    for u in range(6):
        pred = tracking.PRED_ARTIFACT.format(seed=u)
        assert np.array_equal(data.array(fit_run, pred), data.array(trial_run, pred)), u
    assert data.array(fit_run, tracking.PRED_ARTIFACT.format(seed=6)) is None
    # More folds than a class has rows: refused before any run opens.
    code, _, err = run_cli(capsys, *argv[1:], *(a for s in sets for a in ("--set", s)), "--set", "data.cv_folds=31")
    assert code == 2 and "data.cv_folds=31 is larger than the smallest class's training count (30" in err
    assert len(mlc.search_runs([experiment], f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_FIT}'")) == 1


def test_grid_study_with_two_workers_runs_each_point_once(study_env, tmp_path) -> None:
    models = (study_env["a"], study_env["b"], study_env["l"])
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", models, **{"study.workers": 2, "study.name": "grid-2w"})
    out = run_study(cfg)
    study = optuna.load_study(study_name="grid-2w", storage=cfg.study.storage)
    # A worker that finishes first must not re-run a grid point while the other runs the last one.
    assert out.complete == len(study.trials) == 3
    assert sorted(t.params["model"] for t in study.trials) == sorted(models)


def _plan_only(preset_name: str, ctx: object) -> object:
    from studies.trials.presets import PRESETS

    preset = PRESETS.get(preset_name)

    def objective(trial: optuna.Trial) -> float:
        preset.plan(trial, ctx)  # may prune (a last-k beyond the layers); no training: only the sampled params matter
        return 0.5

    return objective


def test_seeded_sampler_does_not_replay_on_resume_or_in_workers(tmp_path) -> None:
    from studies.trials.presets import PRESETS, StudyContext

    ctx = StudyContext("d", ("a", "b"), {"a": 6, "b": 4})
    storage = f"sqlite:///{tmp_path}/s.db"

    def process(
        name: str,
    ) -> optuna.Study:  # what each process (run, worker, host) builds: a sampler seeded train.seed=0
        return optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="maximize",
            sampler=PRESETS.get("search").sampler(ctx, 0),
        )

    first = process("resumed")
    first.optimize(_plan_only("search", ctx), n_trials=3)
    process("resumed").optimize(_plan_only("search", ctx), n_trials=3)  # the rerun of an interrupted study
    resumed = [t.params for t in process("resumed").trials]
    a, b = process("workers"), process("workers")  # two workers taking turns on one study
    for _ in range(3):
        a.optimize(_plan_only("search", ctx), n_trials=1)
        b.optimize(_plan_only("search", ctx), n_trials=1)
    workers = [t.params for t in a.trials]
    for params in (resumed, workers):
        assert len(params) == 6 and all(params[i] != params[j] for i in range(6) for j in range(i)), params
    fresh = process("fresh")
    fresh.optimize(_plan_only("search", ctx), n_trials=3)
    assert [t.params for t in fresh.trials] == resumed[:3] == workers[:3]  # a fresh single-worker study is reproducible


def test_search_with_max_k_1_never_aggregates() -> None:
    from studies.trials.presets import StudyContext

    ctx = StudyContext("d", ("a",), {"a": 6}, max_k=1)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # in memory: planning only
    study.optimize(_plan_only("search", ctx), n_trials=40)
    used = [t.params for t in study.trials if t.params["subset"] == "a"]
    assert len(used) == 40 and all(p["agg.a"] == "single" and "k.a" not in p for p in used)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_search_trial_selects_a_model(sampler) -> None:
    from studies.trials.presets import PRESETS, StudyContext

    ctx = StudyContext("d", ("a", "b", "c"), {"a": 4, "b": 6, "c": 2}, fusions=("concat",))
    chosen = optuna.samplers.RandomSampler(seed=0) if sampler == "random" else PRESETS.get("search").sampler(ctx, 0)
    study = optuna.create_study(sampler=chosen)  # in memory: planning only
    study.optimize(_plan_only("search", ctx), n_trials=30)
    subsets = {"a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)  # none pruned for want of a model
    assert all(t.params["subset"] in subsets for t in study.trials)
    for t in study.trials:  # a model's layer params exactly when the subset holds it
        members = set(t.params["subset"].split("+"))
        assert {k.split(".", 1)[1] for k in t.params if k.startswith("layer.")} == members
    # The choice set is one fixed categorical over the 7 non-empty subsets (optuna#2564), and the sampler explores it.
    dists = {str(t.distributions["subset"]) for t in study.trials}
    assert len(dists) == 1 and len({t.params["subset"] for t in study.trials}) >= 5


def test_a_trial_pruned_while_training(study_env, tmp_path) -> None:
    a = study_env["a"]
    # Every trial below 101% validation accuracy from epoch 5 on is pruned: the one trial trains, reports, is cut.
    cfg = study_cfg(
        study_env,
        tmp_path,
        "search",
        (a,),
        **{"study.trials": 1, "study.pruning": True, "study.pruner": "threshold:1.01", "train.max_epochs": 8},
    )
    optuna.create_study(
        study_name=study_name(cfg), storage=make_storage(cfg.study.storage, 1), direction="maximize"
    ).enqueue_trial({"subset": a})
    out = run_study(cfg)
    assert (out.complete, out.pruned) == (0, 1)
    study, _ = assert_runs_match_trials(cfg, out.name)
    trial = study.trials[0]
    assert sorted(trial.intermediate_values) == list(range(6)) and "prune_reason" not in trial.user_attrs
    mlc = MlflowClient(cfg.tracking.uri)
    run = mlc.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags[tracking.TAG_STATE] == "PRUNED"
    history = {m.step: m.value for m in mlc.get_metric_history(run.info.run_id, "val/acc")}
    assert history == pytest.approx(trial.intermediate_values)
    assert "test/acc" not in run.data.metrics


def test_fused_layers_are_chosen_on_the_mean_over_seeds(monkeypatch) -> None:
    from types import SimpleNamespace

    from studies.trials import best_layers
    from studies.trials.sweep_store import UnitSweep

    # Seed 0 alone favours layer 1; the mean over both seeds favours layer 2 (0.77 vs 0.70), as the layer-sweep
    # preset and every report table choose.
    val = {0: [0.70, 0.80, 0.75], 1: [0.70, 0.60, 0.79]}
    calls: list[int] = []

    def fake_sweep(d: object, cfg: object) -> UnitSweep:
        calls.append(1)
        return UnitSweep([[SimpleNamespace(layer=i, val_acc=v) for i, v in enumerate(val[k])] for k in (0, 1)], 0.0)

    monkeypatch.setattr(best_layers, "unit_sweep", fake_sweep)
    study = optuna.create_study()
    cfg = load_config(env={}, **{"study.seeds": 2})
    assert best_layers.best_layers(study, cfg, {"m": None}) == {"m": 2} and calls == [1]
    assert study.user_attrs["best_layers"] == {"m": 2}
    assert best_layers.best_layers(study, cfg, {"m": None}) == {"m": 2} and calls == [1]  # stored: no second sweep


def test_best_trial_breaks_validation_ties_as_the_report_does() -> None:
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from studies.choice.summary import best_trial

    def trial(number: int, val: float | None, f1: float, state: TrialState = TrialState.COMPLETE):
        t = create_trial(
            state=state,
            value=val,
            params={"c": float(number)},
            distributions={"c": FloatDistribution(0, 10)},
            user_attrs={"val_f1": f1},
        )
        t.number = number
        return t

    # 1 and 2 tie on val/acc; 2 has the higher val/f1 and wins although Optuna's best_trial would say 1
    trials = [
        trial(0, 0.90, 0.99),
        trial(1, 0.95, 0.80),
        trial(2, 0.95, 0.85),
        trial(3, 0.95, 0.85),
        trial(4, None, 1.0, TrialState.PRUNED),
    ]
    assert best_trial(trials).number == 2
    assert best_trial([trials[4]]) is None


def _finished(study: optuna.Study, pair: str, acc: float) -> None:
    """A completed fusion-methods trial of ``pair`` whose validation accuracy was ``acc`` at every epoch."""
    dist = optuna.distributions.CategoricalDistribution(["a+b", "a+c"])
    study.add_trial(
        optuna.trial.create_trial(
            params={"pair": pair},
            distributions={"pair": dist},
            value=acc,
            intermediate_values=dict.fromkeys(range(8), acc),
        )
    )


def _running(pair: str, acc: float) -> optuna.trial.FrozenTrial:
    dist = optuna.distributions.CategoricalDistribution(["a+b", "a+c"])
    return optuna.trial.create_trial(
        params={"pair": pair},
        distributions={"pair": dist},
        state=optuna.trial.TrialState.RUNNING,
        intermediate_values=dict.fromkeys(range(6), acc),
    )


def test_grid_presets_prune_a_trial_only_against_its_own_pair() -> None:
    from benchmark.core.config_sections import StudyConfig
    from studies.run.pruning import make_pruner
    from studies.trials.presets import PRESETS

    study = optuna.create_study(direction="maximize")
    for acc in (0.90, 0.91, 0.92, 0.93, 0.94):  # a strong pair sets a high median
        _finished(study, "a+b", acc)
    for acc in (0.60, 0.61, 0.62, 0.63, 0.64):  # a weak pair, median 0.62
        _finished(study, "a+c", acc)
    grouped = make_pruner(StudyConfig(), PRESETS.get("fusion-methods").prune_within)
    plain = make_pruner(StudyConfig(), PRESETS.get("search").prune_within)
    # Above its own pair's median, below the study's (0.77): only the study-wide median prunes it.
    weak_but_good = _running("a+c", 0.63)
    assert (grouped.prune(study, weak_but_good), plain.prune(study, weak_but_good)) == (False, True)
    # Below its own pair's median: pruned either way; a strong pair's cell is judged against the strong pair.
    assert grouped.prune(study, _running("a+c", 0.61)) and plain.prune(study, _running("a+c", 0.61))
    assert grouped.prune(study, _running("a+b", 0.91)) and not plain.prune(study, _running("a+b", 0.91))
    # A pair with fewer than 5 completed trials is never pruned yet (its own start-up).
    fresh = optuna.create_study(direction="maximize")
    for acc in (0.90, 0.91, 0.92, 0.93, 0.94):
        _finished(fresh, "a+b", acc)
    _finished(fresh, "a+c", 0.5)
    assert not grouped.prune(fresh, _running("a+c", 0.3)) and plain.prune(fresh, _running("a+c", 0.3))


def test_last_k_is_pruned_per_model_and_unpruned_studies_stay_unpruned() -> None:
    from benchmark.core.config_sections import StudyConfig
    from studies.run.pruning import GroupedPruner, make_pruner
    from studies.trials.presets import PRESETS

    assert PRESETS.get("last-k").prune_within == ("model",)
    assert isinstance(make_pruner(StudyConfig(), PRESETS.get("last-k").prune_within), GroupedPruner)
    assert isinstance(make_pruner(StudyConfig(pruning=False), ("pair",)), optuna.pruners.NopPruner)
    assert isinstance(make_pruner(StudyConfig(pruner="threshold:0.5"), ("pair",)), optuna.pruners.ThresholdPruner)


def test_a_baseline_study_resumed_on_other_texts_is_refused(study_env, tmp_path) -> None:
    from benchmark.core.config import with_values
    from benchmark.core.errors import UserError

    # The baseline reads texts, not caches: its texts are what make a rerun the same study or another one.
    cfg = study_cfg(study_env, tmp_path, "tfidf-baseline", (study_env["a"],))
    out = run_study(cfg)
    assert (out.name, out.complete) == ("tfidf-baseline-" + Path(study_env["data"]).name, 6)
    fewer = with_values(cfg, {"extract.limit": 40})  # 40 of the 60 training texts
    with pytest.raises(UserError, match=r"other settings \(texts differ\)"):
        run_study(fewer)
    # A study from before texts were fingerprinted has none recorded: it adopts the current ones, then guards them.
    study = optuna.load_study(study_name=out.name, storage=cfg.study.storage)
    legacy = json.loads(study.user_attrs["config_fingerprint"])
    del legacy["texts"]
    study.set_user_attr("config_fingerprint", json.dumps(legacy, sort_keys=True))
    assert run_study(cfg).complete == 6
    study = optuna.load_study(study_name=out.name, storage=cfg.study.storage)
    assert set(json.loads(study.user_attrs["config_fingerprint"])["texts"]) == {"train", "test"}
    with pytest.raises(UserError, match="texts differ"):
        run_study(fewer)


def test_cross_validated_studies_score_units_on_shared_folds_and_reuse_the_sweep(
    study_env, tmp_path, monkeypatch
) -> None:
    import hashlib

    import studies.trials.sweep_store as store
    from benchmark.core.errors import UserError
    from benchmark.core.keys import load_text_split
    from lightning_modules.datamodule import CachedFeatureDataModule
    from studies.run.caches import resolve_dirs
    from studies.trials.baseline import text_folds

    cv = {"data.cv_folds": 2, "study.seeds": 2, "study.fusions": ("concat",)}
    models = (study_env["a"], study_env["b"])
    fits: list[object] = []
    sweep_units = store.sweep_units

    def counted(*args: object, **kwargs: object) -> object:
        fits.append(args[0])
        return sweep_units(*args, **kwargs)

    monkeypatch.setattr(store, "sweep_units", counted)
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", models, **cv)
    assert run_study(cfg).complete == 2 and len(fits) == 2  # one sweep per model: every fold, seed and layer
    mlc = MlflowClient(cfg.tracking.uri)

    def history(run_id: str, name: str) -> list[float]:
        return [m.value for m in sorted(mlc.get_metric_history(run_id, name), key=lambda m: m.step)]

    for t in load(cfg.study.storage, study_name(cfg)).trials:
        run_id = t.user_attrs["mlflow_run_id"]
        m, unit_val = mlc.get_run(run_id).data.metrics, history(run_id, tracking.CV_VAL_ACC)
        assert len(unit_val) == 4 and len(t.user_attrs[tracking.TRIAL_BEST_EPOCHS]) == 4  # 2 folds x 2 seeds
        assert m[tracking.OBJECTIVE] == pytest.approx(np.mean(unit_val)) == pytest.approx(t.value)
        assert m[tracking.VAL_ACC_SE] == pytest.approx(np.std(unit_val, ddof=1) / 2)
        grid = np.load(mlc.download_artifacts(run_id, tracking.SWEEP_UNITS_ARTIFACT, str(tmp_path)))
        by_layer, se = history(run_id, tracking.SWEEP_VAL_ACC), history(run_id, tracking.SWEEP_VAL_ACC_SE)
        assert grid.shape == (len(by_layer), 4) and grid.mean(axis=1) == pytest.approx(by_layer)
        assert se == pytest.approx(grid.std(axis=1, ddof=1) / 2)
        assert grid[t.user_attrs["best_layer"]] == pytest.approx(unit_val)
    # The fusion study fuses the layers the stored sweeps chose: no sweep is fitted again.
    fusion = study_cfg(study_env, tmp_path, "fusion-methods", models, **cv)
    assert run_study(fusion).complete == 1 and len(fits) == 2
    (trial,) = load(cfg.study.storage, study_name(fusion)).trials
    assert len(history(trial.user_attrs["mlflow_run_id"], tracking.CV_VAL_ACC)) == 4
    assert trial.params["pair"] == "+".join(models)
    # Every model's heads and the TF-IDF baseline validate on the same rows of train (hashed), never on test.
    texts = load_text_split(cfg, "train").texts
    dirs = resolve_dirs(cfg)
    for fold, (_, _, val_texts, _, _) in enumerate(text_folds(cfg)[0]):
        hashes = set()
        for model in models:
            dm = CachedFeatureDataModule.from_config([dirs[model].selection(model, "0")], cfg, fold)
            dm.setup()
            rows = dm.datasets["val"].rows
            hashes.add(hashlib.sha256(rows.tobytes()).hexdigest())
            assert dm.datasets["val"].sources[0].files[0].path.parent == dirs[model].train  # train rows, not test
        assert len(hashes) == 1 and [texts[i] for i in rows] == val_texts
    # A study resumed with other folds is refused.
    with pytest.raises(UserError, match=r"other settings \(data differ\)"):
        run_study(study_cfg(study_env, tmp_path, "layer-sweep", models, **{**cv, "data.cv_folds": 3}))


def test_a_study_name_with_quotes_runs_and_resumes(study_env, tmp_path) -> None:
    from benchmark.core.config import with_values

    # Names reach MLflow filters (orphaned-run clean-up on every start): quotes must not break them.
    name = """bob's "quoted" study"""
    cfg = with_values(study_cfg(study_env, tmp_path, "tfidf-baseline", (study_env["a"],)), {"study.name": name})
    first = run_study(cfg)
    again = run_study(cfg)  # resumes: clean-up runs again, nothing is added
    assert (first.name, first.complete, again.complete) == (name, 6, 6)
    runs = MlflowClient(cfg.tracking.uri).search_runs(
        [MlflowClient(cfg.tracking.uri).get_run(first.parent_run_id).info.experiment_id],
        f"tags.`{tracking.TAG_PARENT}` = '{first.parent_run_id}' and tags.`{tracking.TAG_KIND}` = 'trial'",
    )
    assert len(runs) == 6 and {r.data.tags[tracking.TAG_STUDY] for r in runs} == {name}
