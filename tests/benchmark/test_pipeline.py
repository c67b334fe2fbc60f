"""``layerfuse reproduce`` end to end on tiny models (the CI-sized reproduction), and its resume and bad input."""

from __future__ import annotations

import csv
import json
import logging
import shlex
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.core import tracking
from benchmark.stage_times import STAGES_FILE
from studies.trials.presets import PRESETS

FAST = [
    "--set",
    "data.cv_folds=0",  # reproduce.yaml's 5 folds x the grids: 5x the fits; folds are tested in test_folds/test_study
    "--set",
    "train.max_epochs=3",
    "--set",
    "train.patience=0",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.hidden_dims=16",
    "--set",
    "train.proj_dim=16",
    "--set",
    "study.pruning=false",
    "--set",
    "study.max_k=2",
    "--set",
    "study.fusions=concat,residual:sum",
]


def _argv(tmp: Path, data: Path, models: str, *extra: str) -> list[str]:
    return [
        "reproduce",
        "--datasets",
        str(data),
        "--models",
        models,
        "--seeds",
        "1",
        "--trials",
        "3",
        "--no-progress",
        "--set",
        f"paths.cache_dir={tmp / 'cache'}",
        "--set",
        "extract.dtype=fp32",
        "--set",
        "extract.device=cpu",
        "--set",
        "extract.max_length=64",  # the tiny models have 64 positions (reproduce.yaml asks for 256)
        "--set",
        f"study.storage=sqlite:///{tmp}/optuna.db",
        "--set",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        "--set",
        f"tracking.artifact_root={tmp / 'artifacts'}",
        "--set",
        f"report.out_dir={tmp / 'reports'}",
        *FAST,
        *extra,
    ]


def _trial_counts(storage: str) -> dict[str, int]:
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}


def test_reproduce_runs_every_stage_reports_and_resumes(tiny_models, tmp_path, capsys, caplog) -> None:
    from conftest import write_dataset

    data = write_dataset(tmp_path / "toy", n_train=60, n_test=30)
    models = f"{tiny_models['bert-a']},{tiny_models['llama-right']},tfidf"
    assert main(_argv(tmp_path, data, models)) == 0
    storage = f"sqlite:///{tmp_path}/optuna.db"
    counts = _trial_counts(storage)
    presets = ["tfidf-baseline", "layer-sweep", "last-k", "fusion-methods", "multi-model", "search"]
    assert sorted(name.split("-toy")[0] for name in counts) == sorted(presets), counts
    assert counts["tfidf-baseline-toy"] == 6  # 2 classifiers x 3 values of C
    # 3 models: a layer sweep of each, 3 x 3 aggregations x k=1..2, 3 pairs x 2 fusions, one 3-model subset.
    names = {preset: f"{preset}-toy-tiny-bert-a+tiny-llama-right+tfidf" for preset in presets}
    assert [counts[names[p]] for p in ("layer-sweep", "last-k", "fusion-methods", "multi-model", "search")] == [
        3,
        18,
        6,
        1,
        3,
    ]

    out = tmp_path / "reports" / "reproduce"
    summary = json.loads((out / "summary.json").read_text())
    assert [b["dataset"] for b in summary["baseline"]] == [str(data)] * 6
    assert sum(b["chosen"] for b in summary["baseline"]) == 1
    chosen = next(b for b in summary["baseline"] if b["chosen"])
    assert chosen["val_acc"] == max(b["val_acc"] for b in summary["baseline"])
    assert summary["best"][0]["dataset"] == str(data) and summary["best"][0]["test_n"] == 1
    paired = summary["paired_tests"][0]
    by_name = {"best fusion": paired["fusion_run_id"], "best single model": paired["single_run_id"]}
    assert [v["name"] for v in paired["vs_baseline"]] == ["best fusion", "best single model"]
    assert all(v["baseline_test_acc"] == chosen["test_acc"] for v in paired["vs_baseline"])
    assert paired["vs_baseline"][0]["mcnemar"]  # both runs logged per-unit test predictions
    md = (out / "report.md").read_text()
    assert "Lexical baseline: TF-IDF word 1-2 grams" in md and "TF-IDF (test)" in md
    with (out / STAGES_FILE).open() as fh:
        stages = list(csv.DictReader(fh))
    assert [s["stage"] for s in stages] == ["extract", *presets, "report"]
    assert all(float(s["seconds"]) >= 0 for s in stages)
    report_run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(summary["report_run_id"])
    assert report_run.info.run_name == "reproduce"  # named as the report, not as its studies
    assert STAGES_FILE in {
        a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(report_run.info.run_id)
    }

    # The study runs' artifacts and the baseline's params are in MLflow.
    mlc = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlc.get_experiment_by_name(tracking.experiment_name("toy"))
    base = mlc.search_runs(
        [exp.experiment_id],
        f"tags.`{tracking.TAG_STUDY}` = 'tfidf-baseline-toy' and tags.`{tracking.TAG_KIND}` = 'trial'",
    )
    assert sorted((r.data.params["baseline.classifier"], float(r.data.params["baseline.C"])) for r in base) == sorted(
        (c, x) for c in ("svm", "logreg") for x in (0.1, 1.0, 10.0)
    )
    assert all(r.data.metrics["perf/fused_dim"] > 0 and "train.lr" not in r.data.params for r in base)

    # Every study ends with one refit of its chosen trial on all 60 training rows: the study's result.
    refits = mlc.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_REFIT}'")
    assert sorted(r.data.tags[tracking.TAG_STUDY] for r in refits) == sorted(counts)
    assert all(r.data.metrics[tracking.PERF_TRAIN_ROWS] == 60 and r.info.status == "FINISHED" for r in refits)
    by_source = {r.data.tags[tracking.TAG_REFIT_OF]: r for r in refits}
    parents = mlc.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_STUDY}'")
    for parent in parents:
        refit = mlc.get_run(parent.data.tags[tracking.TAG_RESULT_RUN])
        assert parent.data.metrics[tracking.RESULT_TEST_ACC] == refit.data.metrics[tracking.TEST_ACC]
        assert refit.data.tags[tracking.TAG_PARENT] == parent.info.run_id
    base_refit = by_source[chosen["run_id"]]  # the chosen classifier and C, on every training text
    assert base_refit.data.params["baseline.C"] == str(chosen["C"]) and "refit/seed0/net.safetensors" not in {
        a.path for a in mlc.list_artifacts(base_refit.info.run_id, "refit/seed0")
    }
    best = summary["best"][0]
    assert best["refit_test_acc"] == pytest.approx(by_source[best["run_id"]].data.metrics[tracking.TEST_ACC], abs=1e-9)
    assert best["baseline_refit_test_acc"] == pytest.approx(base_refit.data.metrics[tracking.TEST_ACC], abs=1e-9)
    assert "refit on all train (test)" in md
    # Paired tests also run on the refits (seed against seed) wherever both runs of a pair have one.
    pairs = [(paired["fusion_run_id"], paired["single_run_id"], paired["refit"])]
    pairs += [(by_name[v["name"]], chosen["run_id"], v["refit"]) for v in paired["vs_baseline"]]
    for a, b, refit in pairs:
        assert (refit is not None) == (a in by_source and b in by_source)
        if refit is not None:
            assert refit["a_test_acc"] == pytest.approx(by_source[a].data.metrics[tracking.TEST_ACC], abs=1e-9)
            assert refit["seeds"] == [0] and [m["n"] for m in refit["mcnemar"]] == [30]
    assert any(refit is not None for *_, refit in pairs)

    # Rerunning resumes: every stage is a cache hit or a finished study, no trial is added.
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="studies.choice.refit")
    assert main(_argv(tmp_path, data, models)) == 0
    assert _trial_counts(storage) == counts
    resumed = capsys.readouterr()
    assert "0 extracted" in resumed.out
    assert "reusing refit run" in caplog.text  # each study downloads its refit's config again
    assert "Downloading artifacts" not in resumed.err  # MLflow's bar for each, silenced by --no-progress


def test_reproduce_skips_presets_that_need_more_models(tiny_models, tmp_path, capsys) -> None:
    from conftest import write_dataset

    data = write_dataset(tmp_path / "toy", n_train=40, n_test=20)
    argv = _argv(
        tmp_path, data, "tfidf", "--set", "pipeline.presets=tfidf-baseline,layer-sweep,fusion-methods,multi-model"
    )
    assert main(argv) == 0
    names = set(_trial_counts(f"sqlite:///{tmp_path}/optuna.db"))
    assert names == {"tfidf-baseline-toy", "layer-sweep-toy-tfidf"}
    assert PRESETS.get("fusion-methods").min_models == 2

    # It ends with the answer its report opens with: time, choice, accuracy, ties, cost, then the export command.
    out = capsys.readouterr().out
    (answer,) = json.loads((tmp_path / "reports" / "reproduce" / "summary.json").read_text())["answer"]
    assert (answer["study"], answer["test_acc_source"], answer["test_rows"]) == ("layer-sweep-toy-tfidf", "refit", 20)
    tail = out[out.index("\nreproduce took ") :]
    assert f"The answer:\n  toy: ship {answer['config']} (layer-sweep-toy-tfidf, trial 0)." in tail
    assert f"Test accuracy {answer['test_acc']:.4f} (refit on all training rows), 95% interval" in tail
    assert f"next: {answer['export_command']}\n" in tail and "--name toy-clf" in answer["export_command"]
    # That command (with this test's stores) exports the answer's configuration, refit included.
    stores = [a for a in argv if a.startswith(("study.storage=", "tracking.", "paths."))]
    export = [*shlex.split(answer["export_command"])[1:], *[x for s in stores for x in ("--set", s)]]
    assert main(export) == 0
    printed = capsys.readouterr().out
    assert (
        "exporting the answer of" in printed and "registered models:/toy-clf/1 as models:/toy-clf@champion" in printed
    )
    model = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_model_version_by_alias("toy-clf", "champion")
    assert model.run_id == answer["refit_run_id"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "pipeline.presets=layer-sweep,fusion-method"], "unknown preset 'fusion-method'"),
        (["--models", "minilm-l7"], "unknown model 'minilm-l7'"),
        (["--datasets", ""], "pipeline.datasets is empty"),
        (["--set", "data.cv_folds=13"], "data.cv_folds=13 is larger than the largest class's training count (12"),
    ],
)
def test_reproduce_bad_input_fails_before_any_work(tmp_path, tiny_data, extra, message, capsys) -> None:
    assert main([*_argv(tmp_path, tiny_data, "tfidf"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_an_interrupted_reproduce_sums_each_stage_over_its_sittings(tmp_path, tiny_data, monkeypatch, capsys) -> None:
    """Stopped in its layer sweep and rerun: stages.csv counts both sittings' time, not the last one's."""
    from studies.run import runner

    argv = _argv(tmp_path, tiny_data, "tfidf", "--set", "pipeline.presets=tfidf-baseline,layer-sweep")
    run_study = runner.run_study

    def stopped_in_the_sweep(cfg):  # type: ignore[no-untyped-def]
        if cfg.study.preset == "layer-sweep":
            raise KeyboardInterrupt
        return run_study(cfg)

    monkeypatch.setattr(runner, "run_study", stopped_in_the_sweep)
    assert main(argv) == 130
    journal = tmp_path / "reports" / f"reproduce.{STAGES_FILE}"
    with journal.open() as fh:
        first = {r["stage"]: r for r in csv.DictReader(fh)}
    assert first["layer-sweep"]["outcome"] == "stopped (KeyboardInterrupt)" and "report" not in first
    monkeypatch.setattr(runner, "run_study", run_study)
    capsys.readouterr()
    assert main(argv) == 0
    assert "(this sitting; " in capsys.readouterr().out  # and the stage time of the whole run
    with (tmp_path / "reports" / "reproduce" / STAGES_FILE).open() as fh:
        rows = {r["stage"]: r for r in csv.DictReader(fh)}
    assert journal.read_text() == (tmp_path / "reports" / "reproduce" / STAGES_FILE).read_text()
    assert [rows[s]["sittings"] for s in ("extract", "tfidf-baseline", "layer-sweep", "report")] == ["2", "2", "2", "1"]
    for stage in ("extract", "tfidf-baseline"):
        assert float(rows[stage]["seconds"]) >= float(first[stage]["seconds"])  # to 0.1 s
    assert rows["layer-sweep"]["outcome"].startswith("layer-sweep-toy-tfidf: 1 complete")
    capsys.readouterr()
    assert main(argv) == 0  # a run that reported: the next one times itself afresh
    with journal.open() as fh:
        assert {r["sittings"] for r in csv.DictReader(fh)} == {"1"}
