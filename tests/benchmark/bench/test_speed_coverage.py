"""bench.tie_coverage: one draw through the real sweep engine, and the coverage table over draws."""

from __future__ import annotations

import numpy as np

from benchmark.bench.tie_coverage import SES, one_draw, summarise
from benchmark.core.config import load_config
from studies.choice.row_se import METHOD


def test_one_draw_records_tie_sets_choices_and_the_test_best() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    signal = (2 * labels - 1)[:, None] * np.array([0.0, 0.6, 1.2])[None, :]  # layer 2 separates best
    layers = [(rng.standard_normal((120, 8)) + signal[:, [i]]).astype(np.float32) for i in range(3)]
    cfg = load_config(
        env={},
        **{
            "data.cv_folds": 3,
            "study.seeds": 1,
            "train.max_epochs": 3,
            "train.hidden_dims": (8,),
            "train.batch_size": 16,
        },
    )
    record = one_draw(cfg, {"m": dict(enumerate(layers))}, labels, 0.25, 0, {"m": [0.0, 1.0, 2.0]})
    test = record["test_acc"]
    assert set(test) == {"m@0", "m@1", "m@2"} and record["test_best"] == max(test, key=test.get)
    for se in SES:
        for rule in ("argmax", "one-se"):
            got = record[f"{se}/{rule}"]
            assert got["chosen"] in got["tied"]
            assert got["covered"] == (record["test_best"] in got["tied"])
            assert got["regret"] == 100 * (test[got["chosen"]] - test[record["test_best"]]) <= 0
    # the calibrated SE is never below the row-level noise: a one-split single-seed SE of 0 is gone
    assert len(record[f"{METHOD}/argmax"]["tied"]) >= 1


def test_summary_counts_coverage_size_and_regret() -> None:
    def rec(tied_old: list[str], tied_new: list[str], regret: float) -> dict:
        out = {}
        for se, tied in zip(SES, (tied_old, tied_new), strict=True):
            for rule in ("argmax", "one-se"):
                out[f"{se}/{rule}"] = {"chosen": tied[0], "tied": tied, "covered": "b" in tied, "regret": regret}
        return out

    rows = summarise([rec(["a"], ["a", "b"], -1.0), rec(["b"], ["b"], 0.0), rec(["a"], ["a", "b", "c"], -2.0)])
    old, new = rows[0], rows[2]
    assert (old["coverage"], old["median_tie_set"], old["mean_regret_pts"]) == (1 / 3, 1.0, -1.0)
    assert (new["coverage"], new["median_tie_set"]) == (1.0, 2.0)
