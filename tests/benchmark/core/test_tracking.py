"""What MLflow's users see, end to end: a tiny extract, study, fit and report through the CLI, read back through
``MlflowClient`` from a real ``mlflow server`` on loopback (experiment kind, dataset inputs, system metrics, one
run per command, one report run); plus the ``ui`` command line and the library bars ``--no-progress`` silences.
"""

from __future__ import annotations

import json
import os
import subprocess

import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_helpers import FAST_TRAIN, free_port, stop_server, wait_for_http

from benchmark.cli import main
from benchmark.cli.browse import UI_ENV, ui_command
from benchmark.core import tracking
from benchmark.core.config import load_config
from benchmark.core.row_split import stratified_split
from benchmark.core.text_data import dataset_label, load_split

STUDY = "tracked"


@pytest.fixture(scope="module")
def store(tiny_models, tmp_path_factory):
    """Extract, study (2 trials), fit and report through the CLI into one store; ``(argv base, cfg, root)``."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("tracking")
    data = write_dataset(root / "data", n_train=60, n_test=30)
    a, b = str(tiny_models["bert-a"]), str(tiny_models["bert-b"])
    sets = {
        "paths.cache_dir": root / "cache",
        "tracking.uri": f"sqlite:///{root}/mlflow.db",
        "tracking.artifact_root": root / "artifacts",
        "tracking.system_metrics_interval": 0.2,  # the runs here last seconds: sample often enough to see some
        "extract.dtype": "fp32",
        "extract.device": "cpu",
        **{k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in FAST_TRAIN.items()},
    }
    base = [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]
    commands = [
        ["extract", "--model", f"{a},{b}", "--dataset", str(data), "--no-progress"],
        ["study", "--preset", "search", "--models", f"{a},{b}", "--dataset", str(data), "--trials", "2"],
        ["fit", "--dataset", str(data), "--layer", f"{a}=1", "--layer", f"{b}=2", "--fusion", "sum", "--seeds", "2"],
        ["report", "--study", STUDY, "--out", str(root / "report")],
    ]
    commands[1] += ["--name", STUDY, "--storage", f"sqlite:///{root}/optuna.db", "--no-pruning", "--no-progress"]
    for argv in commands:
        assert main([*argv, *base]) == 0, argv
    cfg = load_config(None, [f"{k}={v}" for k, v in sets.items()], env={}, **{"extract.dataset": str(data)})
    return cfg, (a, b), root


@pytest.fixture(scope="module")
def server(store):
    """An ``MlflowClient`` on a real ``mlflow server`` (REST) over the store, bound to loopback."""
    cfg, _, _ = store
    port = free_port()
    proc = subprocess.Popen(
        ui_command(cfg, port),
        env={**os.environ, **UI_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc)
        yield MlflowClient(f"http://127.0.0.1:{port}"), proc
    finally:
        stop_server(proc)


def runs_of(mlc: MlflowClient, kind: str, extra: str = "") -> list:
    experiments = [e.experiment_id for e in mlc.search_experiments()]
    return mlc.search_runs(experiments, f"tags.`{tracking.TAG_KIND}` = '{kind}'{extra}", max_results=100)


def contexts(run) -> dict:
    """``{context: dataset}`` of a run's dataset inputs."""
    return {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in run.inputs.dataset_inputs
    }


def test_every_layerfuse_experiment_opens_in_the_training_view(server, store) -> None:
    mlc, _ = server
    cfg, _, _ = store
    exp = mlc.get_experiment_by_name(tracking.experiment_name(cfg.extract.dataset))
    assert exp.tags[tracking.TAG_EXPERIMENT_KIND] == tracking.EXPERIMENT_KIND == "custom_model_development"


def test_a_trial_lists_its_three_splits_as_dataset_inputs(server, store) -> None:
    mlc, _ = server
    cfg, _, _ = store
    name = dataset_label(cfg.extract.dataset)
    train = load_split(cfg.extract.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.extract.dataset, "test", cfg.paths.data_dir)
    _, val_rows = stratified_split(train.labels, cfg.data.val_fraction, cfg.data.split_seed)
    trials = runs_of(mlc, tracking.KIND_TRIAL)
    assert len(trials) == 2
    for run in trials:
        inputs = contexts(run)
        assert set(inputs) == {"train", "validation", "test"}
        assert {d.name for d in inputs.values()} == {name}
        assert (inputs["train"].digest, inputs["test"].digest) == (train.data_sha256[:12], test.data_sha256[:12])
        profiles = {c: json.loads(d.profile) for c, d in inputs.items()}
        assert [profiles[c]["num_rows"] for c in ("train", "validation", "test")] == [60, len(val_rows), 30]
        assert profiles["validation"]["held_out_of"] == inputs["train"].digest and profiles["train"]["num_classes"] == 2
        assert json.loads(inputs["train"].source)["uri"].endswith("train.csv")
        keys = [v for k, v in run.data.tags.items() if k.startswith(f"{tracking.TAG_CACHE_KEY}.")]
        assert all((store[2] / "cache" / key / "meta.json").is_file() for key in keys)
        trained = run.data.tags[tracking.TAG_STATE] == "COMPLETE"
        assert len(keys) == (len(run.data.params["models"].split(",")) if trained else 0)  # pruned when planned
    assert any(run.data.tags[tracking.TAG_STATE] == "COMPLETE" for run in trials)
    # Runs filter by dataset, as in the UI's search box.
    found = runs_of(mlc, tracking.KIND_TRIAL, f" and dataset.name = '{name}' and dataset.context = 'validation'")
    assert len(found) == 2


def test_the_study_parent_run_has_system_metrics(server) -> None:
    mlc, _ = server
    (parent,) = runs_of(mlc, tracking.KIND_STUDY)
    metrics = parent.data.metrics
    for key in ("cpu_utilization_percentage", "system_memory_usage_megabytes", tracking.PROCESS_RSS):
        assert f"{tracking.SYSTEM_PREFIX}{key}" in metrics, sorted(metrics)
    assert metrics[f"{tracking.SYSTEM_PREFIX}{tracking.PROCESS_RSS}"] > 50  # a Python with torch loaded
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {dataset_label(parent.data.params["dataset"])}


def test_extract_and_fit_are_runs_of_their_own(server, store) -> None:
    mlc, _ = server
    cfg, (a, b), root = store
    extracts = runs_of(mlc, tracking.KIND_EXTRACT)
    assert len({(r.data.params["model"], r.data.params["split"]) for r in extracts}) == len(extracts) == 4
    assert {r.data.params["split"] for r in extracts} == {"train", "test"}
    for run in extracts:
        assert run.info.status == "FINISHED"
        assert (root / "cache" / run.data.tags[tracking.TAG_CACHE_KEY] / "meta.json").is_file()
        assert run.data.metrics["perf/tokens_per_s"] > 0 and run.data.metrics["perf/peak_rss_mb"] > 0
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == [dataset_label(cfg.extract.dataset)]
    (fit,) = runs_of(mlc, tracking.KIND_FIT)
    p = fit.data.params
    assert (p["fusion"], p["seeds"], p[f"layer.{a}"], p[f"layer.{b}"]) == ("sum", "2", "1", "2")
    assert {"val/acc", "test/acc", "perf/fit_s"} <= set(fit.data.metrics)
    assert len(mlc.get_metric_history(fit.info.run_id, "seed/test_acc")) == 2
    artifacts = {x.path for x in mlc.list_artifacts(fit.info.run_id, "predictions")}
    assert {"predictions/test_pred_seed0.npy", "predictions/test_pred_seed1.npy", "predictions/test_labels.npy"} == (
        artifacts
    )
    assert {x.path for x in mlc.list_artifacts(fit.info.run_id)} >= {"config.yaml", "predictions"}
    assert set(contexts(fit)) == {"train", "validation", "test"}


def test_one_report_run_named_by_the_parent(server) -> None:
    mlc, _ = server
    (report,) = runs_of(mlc, tracking.KIND_REPORT)
    (parent,) = runs_of(mlc, tracking.KIND_STUDY)
    assert report.data.tags[tracking.TAG_REPORT_STUDIES] == STUDY
    assert parent.data.tags[tracking.TAG_REPORT_RUN] == report.info.run_id
    assert "report.html" in {x.path for x in mlc.list_artifacts(report.info.run_id)}
    assert not mlc.list_artifacts(parent.info.run_id, "report")


def test_the_ui_is_one_process_of_one_worker_without_job_runner(server, store) -> None:
    import psutil

    _, proc = server
    cfg, _, _ = store
    cmd = ui_command(cfg, 5000)
    assert cmd[cmd.index("--workers") + 1] == "1" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) <= 2, [p.cmdline() for p in tree]  # mlflow's launcher and one uvicorn process
    assert not any("huey" in " ".join(p.cmdline()) for p in tree)


def test_studies_name_their_objective(store) -> None:
    cfg, _, root = store
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root}/optuna.db")
    assert study.metric_names == [tracking.OBJECTIVE]
    assert "value_val/acc" in study.trials_dataframe().columns


def test_no_progress_silences_the_gguf_loader_bar(capfd) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf

    from extractors.progress import library_bars

    with library_bars(False):
        list(gguf.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "GGUF" not in capfd.readouterr().err
    with library_bars(True):
        list(gguf.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "GGUF" in capfd.readouterr().err  # one bar per long step when progress is on


def test_no_progress_silences_mlflow_artifact_bars(tmp_path, capfd) -> None:
    mlc = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlc.create_experiment("bars", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = mlc.create_run(exp).info.run_id
    for name in ("a", "b"):
        tracking.log_text(mlc, run_id, name, f"folder/{name}.txt")
    capfd.readouterr()
    before = os.environ.get(tracking.ARTIFACT_BARS_ENV)
    with tracking.artifact_bars(False):
        mlc.download_artifacts(run_id, "folder", str(tmp_path / "quiet"))
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert os.environ.get(tracking.ARTIFACT_BARS_ENV) == before  # the switch is scoped to the command
    with tracking.artifact_bars(True):
        mlc.download_artifacts(run_id, "folder", str(tmp_path / "shown"))
    assert "Downloading artifacts" in capfd.readouterr().err  # MLflow's bar when progress is on
    assert sorted(p.name for p in (tmp_path / "quiet" / "folder").iterdir()) == ["a.txt", "b.txt"]


def test_system_metrics_of_a_named_node_are_its_own(tmp_path) -> None:
    import time

    from benchmark.core.config import load_config

    cfg = load_config(
        env={},
        **{
            "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
            "tracking.system_metrics_interval": 0.1,
            "tracking.system_metrics_node": "host-a",
        },
    )
    mlc = tracking.client(cfg.tracking)
    run_id = mlc.create_run(mlc.create_experiment("nodes")).info.run_id
    with tracking.system_metrics(run_id, cfg.tracking):
        time.sleep(1.0)
    keys = set(mlc.get_run(run_id).data.metrics)
    assert f"{tracking.SYSTEM_PREFIX}host-a/{tracking.PROCESS_RSS}" in keys, sorted(keys)
    assert f"{tracking.SYSTEM_PREFIX}host-a/cpu_utilization_percentage" in keys
    assert not any(k.startswith(tracking.SYSTEM_PREFIX) and "/host-a/" not in f"/{k}" for k in keys), sorted(keys)
