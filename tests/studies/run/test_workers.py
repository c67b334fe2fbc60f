"""Studies run by several workers: local processes, a shared PostgreSQL study, an MLflow server over REST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from study_helpers import (
    assert_run_equals_trial,
    assert_runs_match_trials,
    free_port,
    stop_server,
    study_argv,
    study_cfg,
    wait_for_http,
)

from benchmark.core import tracking
from benchmark.core.config import load_config
from studies.run.runner import run_study


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
            # Not DROP ... WITH (FORCE): it must terminate every backend in the database, and an autovacuum worker
            # there is one this role may not terminate. Plain DROP stops autovacuum itself; our own leftover
            # connections (the test's SQLAlchemy pools) are ended first.
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()",
                (n,),
            )
            cur.execute(f"DROP DATABASE IF EXISTS {n}")
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
    port = free_port()
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
        wait_for_http(f"{base}/health", server)
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
        stop_server(server)
    assert len(rest_runs) == len(study.trials)

    def pairs(run: dict, key: str) -> dict:
        return {x["key"]: x["value"] for x in run["data"].get(key, [])}

    by_trial = {int(pairs(r, "tags")[tracking.TAG_TRIAL]): r for r in rest_runs}
    for t in study.trials:
        r = by_trial[t.number]
        assert r["info"]["run_id"] == t.user_attrs["mlflow_run_id"]
        assert_run_equals_trial(t, pairs(r, "params"), pairs(r, "metrics"), pairs(r, "tags"), out.parent_run_id)


def test_grid_study_with_two_workers_runs_each_point_once(study_env, tmp_path) -> None:
    models = (study_env["a"], study_env["b"], study_env["l"])
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", models, **{"study.workers": 2, "study.name": "grid-2w"})
    out = run_study(cfg)
    study = optuna.load_study(study_name="grid-2w", storage=cfg.study.storage)
    # A worker that finishes first must not re-run a grid point while the other runs the last one.
    assert out.complete == len(study.trials) == 3
    assert sorted(t.params["model"] for t in study.trials) == sorted(models)
