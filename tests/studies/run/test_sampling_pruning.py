"""The seeded sampler and the grouped pruner: no replay on resume, every search trial valid, pruning per group."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_helpers import assert_runs_match_trials, study_cfg

from benchmark.core import tracking
from benchmark.core.optuna_store import make_storage
from studies.run.runner import run_study, study_name


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
