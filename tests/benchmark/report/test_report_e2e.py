"""``write_report`` on real studies: tiny local models, a layer sweep and a 4-trial search, tracked in tmp stores."""

from __future__ import annotations

import re
import shlex
import statistics

import pytest
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.core import tracking
from benchmark.core.config import load_config
from benchmark.report import write_report
from extractors.run import extract_all
from studies.run.runner import run_study

FAST = {
    "train.max_epochs": 3,
    "train.patience": 0,
    "train.batch_size": 8,
    "train.hidden_dims": (16,),
    "train.proj_dim": 16,
    "study.pruning": False,
    "study.trials": 4,
    "extract.show_progress": False,
}


@pytest.fixture(scope="module")
def studies(tiny_models, tmp_path_factory):
    """A layer-sweep and a search study on two tiny BERTs: ``(cfg, [outcomes], root)``."""
    from conftest import write_dataset

    root = tmp_path_factory.mktemp("report-e2e")
    data = write_dataset(root / "data", n_train=60, n_test=30)
    base = {
        "extract.models": (str(tiny_models["bert-a"]), str(tiny_models["bert-b"])),
        "extract.dataset": str(data),
        "extract.dtype": "fp32",
        "extract.device": "cpu",
        "paths.cache_dir": str(root / "cache"),
        "study.storage": f"sqlite:///{root}/optuna.db",
        "tracking.uri": f"sqlite:///{root}/mlflow.db",
        "tracking.artifact_root": str(root / "artifacts"),
        "report.out_dir": str(root / "reports"),
        **FAST,
    }
    extract_all(load_config(env={}, **base))
    outcomes = [run_study(load_config(env={}, **base, **{"study.preset": p})) for p in ("layer-sweep", "search")]
    return load_config(env={}, **base), outcomes, root


@pytest.fixture(scope="module")
def report(studies):
    cfg, outcomes, _ = studies
    return write_report(cfg, studies=[o.name for o in outcomes])


def test_report_files_and_report_run(studies, report) -> None:
    cfg, outcomes, root = studies
    names = {p.name for p in report.out_dir.iterdir()}
    assert report.out_dir.parent == root / "reports" and len(report.out_dir.name) <= 80  # long study names are cut
    assert {"report.md", "report.html", "best_layers.csv", "summary.json", "cost_vs_models.png"} <= names
    assert sum(n.startswith("acc_by_layer_tiny-bert-") for n in names) == 2  # short names for models given as paths
    assert all(r["pair"] == "tiny-bert-a + tiny-bert-b" for r in report.summary["fusion_comparison"])
    html = (report.out_dir / "report.html").read_text()
    assert all(f'data-file="{n}"' in html for n in names if n.endswith(".png"))
    mlc = MlflowClient(cfg.tracking.uri)
    assert report.parent_runs == sorted(o.parent_run_id for o in outcomes)
    assert {a.path for a in mlc.list_artifacts(report.run_id)} == set(report.summary["files"])
    assert mlc.get_run(report.run_id).info.run_name == report.out_dir.name
    for outcome in outcomes:
        assert mlc.get_run(outcome.parent_run_id).data.tags[tracking.TAG_REPORT_RUN] == report.run_id


def test_best_layers_are_the_sweeps_choices(studies, report) -> None:
    cfg, outcomes, _ = studies
    mlc = MlflowClient(cfg.tracking.uri)
    sweep = outcomes[0]
    runs = mlc.search_runs(
        [mlc.get_run(sweep.parent_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}' and tags.`layerfuse.run_kind` = 'trial'",
    )
    rows = {r["model"]: r for r in report.summary["best_layers"]}
    assert len(runs) == len(rows) == 2
    for run in runs:
        model = run.data.tags["layerfuse.sweep_model"]
        val = [m.value for m in sorted(mlc.get_metric_history(run.info.run_id, "sweep/val_acc"), key=lambda m: m.step)]
        test = [
            m.value for m in sorted(mlc.get_metric_history(run.info.run_id, "sweep/test_acc"), key=lambda m: m.step)
        ]
        row = rows[model]
        chosen = int(run.data.params[f"layer.{model}"])
        assert (row["source"], row["best_layer"], row["last_layer"]) == ("layer-sweep", chosen, 2)
        assert (row["best_val_acc"], row["last_val_acc"]) == pytest.approx((max(val), val[-1]))
        assert row["gain_test"] == pytest.approx(test[row["best_layer"]] - test[-1])


def test_reproduce_command_retrains_the_best_configuration(studies, report, monkeypatch, capsys) -> None:
    cfg, _, _ = studies
    (best,) = report.summary["best"]
    argv = shlex.split(best["command"])
    assert argv[:2] == ["layerfuse", "fit"]
    monkeypatch.delenv("LAYERFUSE_CACHE_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking.uri)  # where the fit run goes; the command reads no run
    capsys.readouterr()
    assert main(argv[1:]) == 0
    printed = re.findall(r"seed (\d+): val acc ([\d.]+) .* test acc ([\d.]+)", capsys.readouterr().out)
    mlc = MlflowClient(cfg.tracking.uri)
    history = {
        k: sorted(mlc.get_metric_history(best["run_id"], k), key=lambda m: m.step)
        for k in ("seed/val_acc", "seed/test_acc")
    }
    assert len(printed) == len(history["seed/val_acc"]) >= 1
    assert [v for _, v, _ in printed] == [f"{m.value:.4f}" for m in history["seed/val_acc"]]
    assert [t for _, _, t in printed] == [f"{m.value:.4f}" for m in history["seed/test_acc"]]
    experiment = mlc.get_run(best["run_id"]).info.experiment_id
    (fit,) = mlc.search_runs([experiment], f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_FIT}'")
    assert fit.data.metrics["val/acc"] == pytest.approx(statistics.fmean(m.value for m in history["seed/val_acc"]))
