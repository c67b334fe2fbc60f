"""The study summary and the fused-layer choice follow ``selection.rule`` (a tie set of hand-built unit scores)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial
from study_helpers import models_only
from test_selection import A, B, C

from benchmark.core import tracking
from benchmark.core.config import load_config
from benchmark.core.study_data import ModelDirs
from studies.choice.summary import summarise
from studies.run.fingerprint import fingerprint
from studies.trials import best_layers
from studies.trials.sweep_store import UnitSweep

# (models, layers, per-unit val accuracies, fused width, feature bytes): #0 is the best (mean .80); #1 (mean .796)
# is tied with it (paired SE .0108 >= .004) and cheaper (one model); #2 is cheaper still but not tied (.79).
TRIALS = [
    ("a,b", {"a": "3", "b": "2"}, A, 64, 2e6),
    ("a", {"a": "5"}, C, 32, 1e6),
    ("a", {"a": "2"}, B, 32, 1e6),
]


@pytest.fixture
def finished_study(tmp_path: Path) -> tuple[optuna.Study, object, str, Path]:
    """An Optuna study of the three trials, each with its MLflow run holding ``cv/val_acc``, params and costs."""
    stores = {"tracking.uri": f"sqlite:///{tmp_path}/mlflow.db", "tracking.artifact_root": str(tmp_path / "artifacts")}
    cfg = load_config(env={}, **stores)
    mlc = tracking.client(cfg.tracking)
    exp = tracking.ensure_experiment(mlc, "layerfuse/toy", cfg.tracking)
    parent = mlc.create_run(exp, tags={tracking.TAG_KIND: tracking.KIND_STUDY}).info.run_id
    study = optuna.create_study(direction="maximize")
    for number, (models, layers, units, width, size) in enumerate(TRIALS):
        run_id = mlc.create_run(exp, tags={tracking.TAG_PARENT: parent}).info.run_id
        params = {"models": models, "n_models": len(models.split(",")), **{f"layer.{m}": s for m, s in layers.items()}}
        metrics = {"val/acc": sum(units) / len(units), "perf/fused_dim": width, "perf/feature_bytes": size}
        tracking.log_run_data(mlc, run_id, params=params, metrics=metrics, histories={tracking.CV_VAL_ACC: units})
        study.add_trial(
            create_trial(
                value=metrics["val/acc"],
                params={"x": float(number)},
                distributions={"x": FloatDistribution(0, 10)},
                user_attrs={"mlflow_run_id": run_id, "val_f1": 0.5},
            )
        )
    return study, mlc, parent, tmp_path


def test_summary_chooses_by_the_rule_and_records_the_tie_set(finished_study) -> None:
    study, mlc, parent, root = finished_study
    uri = {"tracking.uri": f"sqlite:///{root}/mlflow.db"}
    argmax = summarise(study, load_config(env={}, **uri), mlc, parent)
    assert (argmax.best_number, argmax.rule, argmax.tied) == (0, "argmax", (0, 1))
    one_se = summarise(study, load_config(env={}, **uri, **{"selection.rule": "one-se"}), mlc, parent)
    assert (one_se.best_number, one_se.rule, one_se.tied) == (1, "one-se", (0, 1))
    assert one_se.best_value == pytest.approx(0.796)
    run = mlc.get_run(parent)
    assert run.data.tags[tracking.TAG_SELECTION_RULE] == "one-se" and run.data.metrics["best/trial"] == 1
    tie_set = json.loads(Path(mlc.download_artifacts(parent, tracking.TIED_ARTIFACT, str(root))).read_text())
    assert (tie_set["rule"], tie_set["best"], tie_set["chosen"]) == ("one-se", 0, 1)
    assert [t["trial"] for t in tie_set["tied"]] == [0, 1]


def test_the_rule_is_not_in_the_study_fingerprint(tmp_path: Path) -> None:
    dirs = {"a": ModelDirs(tmp_path / "a" / "train", tmp_path / "a" / "test")}
    base = {"paths.cache_dir": str(tmp_path), "extract.models": ("a",)}
    one_se = load_config(env={}, **base, **{"selection.rule": "one-se"})
    assert fingerprint(load_config(env={}, **base), models_only(dirs)) == fingerprint(one_se, models_only(dirs))


def test_fused_layer_follows_the_rule(monkeypatch) -> None:
    # Units = 2 seeds. Layer 3 is the best (mean .80); layer 1 (.79, differences [.07, -.05]: SE .06) is tied,
    # layer 0 (.70, differences [.12, .08]: SE .02) and layer 2 (.78, differences [.02, .02]: SE 0) are not.
    val = {0: [0.70, 0.75, 0.80, 0.82], 1: [0.70, 0.83, 0.76, 0.78]}

    def fake_sweep(d: object, cfg: object) -> UnitSweep:  # scores[unit][layer]
        return UnitSweep([[SimpleNamespace(layer=i, val_acc=v) for i, v in enumerate(val[k])] for k in (0, 1)], 0.0)

    monkeypatch.setattr(best_layers, "unit_sweep", fake_sweep)
    chosen = {}
    for rule in ("argmax", "one-se"):
        study = optuna.create_study()
        cfg = load_config(env={}, **{"study.seeds": 2, "selection.rule": rule})
        chosen[rule] = best_layers.best_layers(study, cfg, {"m": None})
        assert study.user_attrs["best_layers_tied"] == {"m": [1, 3]} and study.user_attrs["best_layers_rule"] == rule
    assert chosen == {"argmax": {"m": 3}, "one-se": {"m": 1}}
