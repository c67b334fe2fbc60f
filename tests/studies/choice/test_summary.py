"""The study summary's choice: fused layers on the mean over seeds, validation ties broken as the report does."""

from __future__ import annotations

import optuna

from benchmark.core.config import load_config


def test_fused_layers_are_chosen_on_the_mean_over_seeds(monkeypatch) -> None:
    from types import SimpleNamespace

    from studies.trials import best_layers
    from studies.trials.sweep_store import UnitSweep

    # Seed 0 alone favours layer 1; the mean over both seeds favours layer 2 (0.77 vs 0.70), as the layer-sweep
    # preset and every report table choose.
    val = {0: [0.70, 0.80, 0.75], 1: [0.70, 0.60, 0.79]}
    calls: list[int] = []

    def fake_sweep(d: object, cfg: object) -> UnitSweep:
        calls.append(1)
        return UnitSweep([[SimpleNamespace(layer=i, val_acc=v) for i, v in enumerate(val[k])] for k in (0, 1)], 0.0)

    monkeypatch.setattr(best_layers, "unit_sweep", fake_sweep)
    study = optuna.create_study()
    cfg = load_config(env={}, **{"study.seeds": 2})
    assert best_layers.best_layers(study, cfg, {"m": None}) == {"m": 2} and calls == [1]
    assert study.user_attrs["best_layers"] == {"m": 2}
    assert best_layers.best_layers(study, cfg, {"m": None}) == {"m": 2} and calls == [1]  # stored: no second sweep


def test_best_trial_breaks_validation_ties_as_the_report_does() -> None:
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from studies.choice.summary import best_trial

    def trial(number: int, val: float | None, f1: float, state: TrialState = TrialState.COMPLETE):
        t = create_trial(
            state=state,
            value=val,
            params={"c": float(number)},
            distributions={"c": FloatDistribution(0, 10)},
            user_attrs={"val_f1": f1},
        )
        t.number = number
        return t

    # 1 and 2 tie on val/acc; 2 has the higher val/f1 and wins although Optuna's best_trial would say 1
    trials = [
        trial(0, 0.90, 0.99),
        trial(1, 0.95, 0.80),
        trial(2, 0.95, 0.85),
        trial(3, 0.95, 0.85),
        trial(4, None, 1.0, TrialState.PRUNED),
    ]
    assert best_trial(trials).number == 2
    assert best_trial([trials[4]]) is None
