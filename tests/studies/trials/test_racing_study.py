"""A raced layer sweep and a probed last-k study, end to end on tiny local models: what MLflow and Optuna record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from study_helpers import assert_runs_match_trials, study_cfg

from benchmark.core import tracking
from studies.run.runner import run_study, study_name
from studies.trials.racing import PROBE_KEPT, PROBE_SCORES

# No slack: the probe keeps only its best candidate and the protected one (the deepest layer; the last layer alone).
STRICT = {"study.race": True, "study.probe_z": 0.0, "study.probe_margin": 0.0, "data.cv_folds": 2, "study.seeds": 2}


def _history(mlc: MlflowClient, run_id: str, name: str) -> list[float]:
    return [m.value for m in sorted(mlc.get_metric_history(run_id, name), key=lambda m: m.step)]


def test_a_raced_sweep_logs_each_layers_probe_and_what_stopped_it_as_an_outcome(study_env, tmp_path: Path) -> None:
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["l"],), **STRICT)
    assert run_study(cfg).complete == 1
    study, _ = assert_runs_match_trials(cfg, study_name(cfg))
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE"
    mlc = MlflowClient(cfg.tracking.uri)
    run = mlc.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "layerfuse.error" not in run.data.tags
    screen = json.loads(
        Path(mlc.download_artifacts(run.info.run_id, tracking.SCREEN_ARTIFACT, str(tmp_path))).read_text()
    )
    grid = np.load(mlc.download_artifacts(run.info.run_id, tracking.SWEEP_UNITS_ARTIFACT, str(tmp_path)))
    probe = _history(mlc, run.info.run_id, tracking.SWEEP_PROBE_ACC)
    trained = _history(mlc, run.info.run_id, tracking.SWEEP_UNITS_TRAINED)
    val = _history(mlc, run.info.run_id, tracking.SWEEP_VAL_ACC)
    layers = [s["layer"] for s in screen]
    assert layers == list(range(len(grid))) and len(probe) == len(trained) == len(val) == len(layers)
    assert [s["probe_acc"] for s in screen] == pytest.approx(probe) and all(0 <= p <= 1 for p in probe)
    stopped = [s["layer"] for s in screen if s["stopped"]]
    assert stopped and all(s["stopped"] == "probe" for s in screen if s["stopped"])  # dropped before training
    assert layers[-1] not in stopped  # the deepest layer always trains
    for s in screen:
        full = not s["stopped"]
        assert trained[s["layer"]] == s["units_trained"] == (4 if full else 0)
        assert np.isfinite(grid[s["layer"]]).all() == full and math.isfinite(val[s["layer"]]) == full
    best = int(trial.user_attrs["best_layer"])
    assert best not in stopped and trial.value == pytest.approx(np.mean(grid[best]))


def test_a_probed_last_k_study_prunes_dropped_candidates_before_training(study_env, tmp_path: Path) -> None:
    cfg = study_cfg(study_env, tmp_path, "last-k", (study_env["a"],), **STRICT, **{"study.max_k": 3})
    run_study(cfg)
    study, _ = assert_runs_match_trials(cfg, study_name(cfg))
    kept, scores = study.user_attrs[PROBE_KEPT], study.user_attrs[PROBE_SCORES]
    (model,) = kept
    assert len(scores[model]) == 9 and set(kept[model]) >= {"mean:last1", "max:last1", "min:last1"}
    mlc = MlflowClient(cfg.tracking.uri)
    for t in study.trials:
        spec = f"{t.params['agg']}:last{t.params['k']}"
        run = mlc.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"  # a dropped candidate is an outcome, not a failure
        assert run.data.metrics[tracking.PROBE_VAL_ACC] == pytest.approx(scores[model][spec])
        if spec in kept[model]:
            assert t.state.name == "COMPLETE" and tracking.VAL_ACC in run.data.metrics
        else:
            assert t.state.name == "PRUNED" and t.user_attrs["prune_reason"].startswith("probe: ")
            assert tracking.VAL_ACC not in run.data.metrics  # never trained
    assert any(t.state.name == "PRUNED" for t in study.trials)


def test_a_report_of_a_raced_sweep_shows_the_probe_and_leaves_stopped_layers_out_of_the_ranking(
    study_env, tmp_path: Path
) -> None:
    from benchmark.report import write_report

    cfg = study_cfg(
        study_env, tmp_path, "layer-sweep", (study_env["l"],), **STRICT, **{"report.out_dir": str(tmp_path)}
    )
    run_study(cfg)
    report = write_report(cfg, studies=[study_name(cfg)])
    md = (report.out_dir / "report.md").read_text()
    study, _ = assert_runs_match_trials(cfg, study_name(cfg))
    mlc = MlflowClient(cfg.tracking.uri)
    run_id = study.trials[0].user_attrs["mlflow_run_id"]
    screen = json.loads(Path(mlc.download_artifacts(run_id, tracking.SCREEN_ARTIFACT, str(tmp_path))).read_text())
    stopped = {s["layer"]: s["probe_acc"] for s in screen if s["stopped"]}
    assert stopped
    grid = md.split("### Layer-wise accuracy on data")[1].split("\n## ")[0]
    for layer, probe in stopped.items():  # every stopped layer is listed, with its probe score and no accuracy
        assert f"| {layer} | stopped (probe {probe:.4f}) |" in grid
    (row,) = report.summary["best_layers"]
    assert row["best_layer"] not in stopped and not set(str(row["tied_layers"]).split(",")) & {str(x) for x in stopped}
    assert (report.out_dir / "acc_by_layer_tiny-llama-right.png").stat().st_size > 10_000
