"""``layerfuse fit`` (``studies.trials.fit``) reproduces a study trial, single split and cross-validated."""

from __future__ import annotations

import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from study_helpers import run_cli, study_cfg

from benchmark.core import tracking
from studies.run.runner import run_study, study_name


def test_fit_reproduces_a_search_trial(study_env, tmp_path, capsys, split_reads) -> None:
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
    split_reads.clear()
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert split_reads == {"train": 1, "test": 1}  # resolved once for the fit, its inputs and test labels
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
