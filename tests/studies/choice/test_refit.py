"""Refit of a study's chosen trial on all training rows: one child run per refit, heads and predictions logged."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from export_fixtures import STUDY, tiny_study
from mlflow.tracking import MlflowClient

from benchmark.core import tracking
from benchmark.core.errors import UserError
from studies.choice.refit import refit_study


@pytest.fixture(scope="module")
def toy(tiny_models, tmp_path_factory):
    return tiny_study(tiny_models, tmp_path_factory.mktemp("refit"))


def test_the_study_refits_its_choice_on_all_rows_for_the_median_best_epoch(toy) -> None:
    study = optuna.load_study(study_name=STUDY, storage=toy.study.storage)
    trial = study.trials[0]
    best = trial.user_attrs[tracking.TRIAL_BEST_EPOCHS]
    assert len(best) == 2  # one per seed
    result = refit_study(toy, STUDY)
    assert result.trial == 0 and result.reused  # run_study refit the chosen trial when the study finished
    parent = MlflowClient(toy.tracking.uri).get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags[tracking.TAG_RESULT_RUN] == result.run_id and parent.info.status == "FINISHED"
    assert parent.data.metrics[tracking.RESULT_TEST_ACC] == pytest.approx(float(np.mean(result.test_acc)))
    forced = refit_study(toy, STUDY, force=True)
    assert not forced.reused and forced.run_id != result.run_id
    assert forced.test_acc == result.test_acc  # seeded: the same heads again
    assert result.epochs == max(1, round(float(np.median(np.array(best) + 1))))
    mlc = MlflowClient(toy.tracking.uri)
    run = mlc.get_run(result.run_id)
    tags, params = run.data.tags, run.data.params
    assert tags[tracking.TAG_KIND] == tracking.KIND_REFIT and tags[tracking.TAG_REFIT_OF] == result.source_run_id
    assert tags[tracking.TAG_PARENT] == study.user_attrs["mlflow_parent_run_id"]
    assert params[tracking.PARAM_REFIT_EPOCHS] == str(result.epochs) and params["fusion"] == "sum"
    assert run.data.metrics[tracking.PERF_TRAIN_ROWS] == 60  # every training row, none held out
    labels = np.load(mlc.download_artifacts(tags[tracking.TAG_PARENT], tracking.TEST_LABELS_ARTIFACT))
    for k in range(2):
        pred = np.load(mlc.download_artifacts(result.run_id, tracking.PRED_ARTIFACT.format(seed=k)))
        assert pred.shape == (30,) and float((pred == labels).mean()) == pytest.approx(result.test_acc[k])
        files = {f.path.rsplit("/", 1)[-1] for f in mlc.list_artifacts(result.run_id, tracking.HEAD_DIR.format(seed=k))}
        assert files == {"net.safetensors", "scalers.npz", "head.json"}
    again = refit_study(toy, STUDY)
    assert again.reused and again.run_id == forced.run_id and again.test_acc == result.test_acc  # the latest


def test_refit_bad_study_and_trial(toy) -> None:
    with pytest.raises(UserError, match="no study 'nope'"):
        refit_study(toy, "nope")
    with pytest.raises(UserError, match="trials 0..0"):
        refit_study(toy, STUDY, trial=5)


def test_refit_cli_reuses_the_finished_run(toy, capsys) -> None:
    from benchmark.cli import main

    first = refit_study(toy, STUDY)
    argv = ["refit", "--study", STUDY, "--storage", toy.study.storage, "--set", f"tracking.uri={toy.tracking.uri}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"reused run {first.run_id}" in out and "sum:" in out


def _history(mlc: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in mlc.get_metric_history(run_id, name))


def test_trial_and_refit_runs_hold_one_curve_point_per_trained_epoch(toy) -> None:
    """Learning curves in MLflow (step = epoch): the mean over units and each unit's, then the final score."""
    study = optuna.load_study(study_name=STUDY, storage=toy.study.storage)
    mlc = MlflowClient(toy.tracking.uri)
    trial_run = study.trials[0].user_attrs["mlflow_run_id"]
    units = [_history(mlc, trial_run, f"val/loss.unit{u}") for u in range(2)]  # 2 seeds
    epochs = [len(u) for u in units]
    assert min(epochs) >= 1 and [[s for s, _ in u] for u in units] == [list(range(e)) for e in epochs]
    assert epochs == [min(b + 1 + 2, 6) for b in study.trials[0].user_attrs["best_epochs"]]  # patience 2, 6 epochs
    mean = _history(mlc, trial_run, tracking.VAL_LOSS)
    curve, final = mean[:-1], mean[-1]
    assert [s for s, _ in curve] == list(range(max(epochs)))  # one point per trained epoch
    assert curve[0][1] == pytest.approx((units[0][0][1] + units[1][0][1]) / 2)
    best = [min(v for _, v in u) for u in units]  # monitor val/loss: each unit's best epoch
    assert final == (max(epochs), pytest.approx(sum(best) / 2))  # the final score comes after the curve
    assert mlc.get_run(trial_run).data.metrics[tracking.VAL_LOSS] == pytest.approx(sum(best) / 2)
    for name in (tracking.TRAIN_LOSS, tracking.VAL_ACC):
        assert [s for s, _ in _history(mlc, trial_run, name)][: max(epochs)] == list(range(max(epochs)))
    refit = refit_study(toy, STUDY)
    train = _history(mlc, refit.run_id, tracking.TRAIN_LOSS)
    assert [s for s, _ in train] == list(range(refit.epochs))  # a refit validates nothing: train/loss only
    assert [s for s, _ in _history(mlc, refit.run_id, "train/loss.unit1")] == list(range(refit.epochs))
    assert _history(mlc, refit.run_id, tracking.VAL_LOSS) == []


def test_a_refit_trains_on_the_callers_accelerator(toy, monkeypatch) -> None:
    """``train.accelerator`` is the caller's (not the trial's logged one) and reaches the refit's Trainer."""
    from benchmark.core.config import with_values
    from lightning_modules import engine

    seen: list[str] = []
    make = engine.make_trainer
    monkeypatch.setattr(engine, "make_trainer", lambda cfg, *a: (seen.append(cfg.train.accelerator), make(cfg, *a))[1])
    refit_study(with_values(toy, {"train.accelerator": "auto"}), STUDY, force=True)
    assert seen == ["auto"]  # one Trainer for every seed
