"""``run_study`` end to end on tiny local models: runs equal trials, sweeps, grids, failures, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_helpers import assert_runs_match_trials, load, study_argv, study_cfg

from benchmark.core import tracking
from benchmark.core.config import load_config
from studies.choice.val_record import client_blob, read_sweep_rows
from studies.run.retries import SITTING_ATTR
from studies.run.runner import run_study, study_name
from studies.trials.objective import INTERRUPTED_ATTR


def test_search_study_end_to_end(study_env, tmp_path, split_reads, client_opens) -> None:
    cfg = study_cfg(study_env, tmp_path, "search", (study_env["a"], study_env["b"]), **{"study.trials": 5})
    out = run_study(cfg)
    assert out.complete + out.pruned == 5
    # What the study reads is resolved once at its door (benchmark.core.study_data): set-up, fingerprint, parent run,
    # shift check, every trial and the refit read each split once in all (at 3ff5d21: train 6, test 7 times).
    assert out.result_test_acc is not None and split_reads == {"train": 1, "test": 1}
    # Its stores too (benchmark.core.study_stores): one MLflow client for set-up, trials, summary and refit (the
    # refit opened three of its own before).
    assert client_opens == [cfg.tracking.uri]
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
    from benchmark.core.study_data import resolve_data
    from lightning_modules.components.classifier import MLPHead

    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["a"], study_env["l"]))
    out = run_study(cfg)
    assert out.complete == 2
    _, runs = assert_runs_match_trials(cfg, out.name)
    mlc = MlflowClient(cfg.tracking.uri)
    dirs = resolve_data(cfg, cfg.extract.models).dirs
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
            proc.send_signal(signal.SIGKILL)
            killed_number = -1
            break
    proc.wait(30)
    assert killed_number is not None, "the study never reached a second trial"
    # The trial the kill stopped is the one left RUNNING (the one seen before the second of sleep may have ended).
    (killed_number,) = [t.number for t in load(storage, "killme").trials if t.state.name == "RUNNING"]
    # Rerun at once, within the heartbeat grace period: the dead trial still looks RUNNING.
    subprocess.run(argv, check=True, timeout=600, stdout=subprocess.DEVNULL)
    study = load(storage, "killme")
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed_number] == "FAIL"
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3
    killed = study.trials[killed_number]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params  # retried with the same params, once
    # Lost with its command, not failed by itself: the retry does not use up the trial's budget for errors.
    assert killed.user_attrs[INTERRUPTED_ATTR] is True and killed.user_attrs[SITTING_ATTR][tracking.TAG_PID]
    assert retries[0].user_attrs["retry_of"] == killed_number and retries[0].state.name in ("COMPLETE", "PRUNED")
    cfg = load_config(env={}, **{"study.storage": storage, "tracking.uri": uri})
    assert_runs_match_trials(cfg, "killme")
    run = MlflowClient(uri).get_run(killed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "heartbeat" in run.data.tags["layerfuse.error"]


def test_failed_trial_fails_the_parent_then_is_retried(study_env, tmp_path) -> None:
    import shutil

    from benchmark.core.study_data import resolve_data

    cache = tmp_path / "cache"
    shutil.copytree(study_env["cache"], cache)
    cfg = study_cfg(
        study_env, tmp_path, "layer-sweep", (study_env["a"],), **{"paths.cache_dir": str(cache), "train.max_epochs": 1}
    )
    labels_file = resolve_data(cfg, cfg.extract.models).dirs[study_env["a"]].train / "labels.npy"
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


def test_a_baseline_study_resumed_on_other_texts_is_refused(study_env, tmp_path, split_reads) -> None:
    from benchmark.core.config import with_values
    from benchmark.core.errors import UserError

    # The baseline reads texts, not caches: its texts are what make a rerun the same study or another one.
    cfg = study_cfg(study_env, tmp_path, "tfidf-baseline", (study_env["a"],))
    out = run_study(cfg)
    assert (out.name, out.complete) == ("tfidf-baseline-" + Path(study_env["data"]).name, 6)
    assert split_reads == {"train": 1, "test": 1}  # texts read once for its 6 trials and the refit
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
