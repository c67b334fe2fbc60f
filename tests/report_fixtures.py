"""A fake MLflow store with studies whose every number is known, for the report tests.

Runs are written through ``benchmark.core.tracking`` with the layout studies write (experiment per dataset,
parent run per study holding the test labels, nested trial runs with ``layer.<alias>`` params, metrics,
seed and sweep histories, predictions). Like real layer sweeps, sweep runs log the whole sweep's cost and no
predictions.
Models: ``dec`` (L=4) and ``enc`` (L=2), both swept, and ``emb``, never swept and not in the model registry
(so its depth is unknown). The hand-computed expectations the tests check are spelled out next to the values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core import tracking
from benchmark.core.config import BenchConfig, load_config, to_yaml

MIB = 2**20
LABELS = np.array([0, 1] * 10)  # 20 test examples


def _wrong(indices: list[int]) -> np.ndarray:
    """Predictions equal to LABELS except at ``indices``."""
    pred = LABELS.copy()
    pred[indices] = 1 - pred[indices]
    return pred


# Seed k predictions, best fusion vs best single: seed 0 -> only fusion right 5x, only single right 0x
# (p = 2 / 2^5 = 0.0625); seed 1 -> 1 vs 2 (p = min(1, 2 * (1 + 3) / 8) = 1.0); seed 2 -> identical (p = 1.0).
FUSION_PREDS = [_wrong([0]), _wrong([0, 1]), _wrong([7])]
SINGLE_PREDS = [_wrong([0, 1, 2, 3, 4, 5]), _wrong([2]), _wrong([7])]
# The best toy configuration's resolved config.yaml: the reproduce command must carry exactly the values that
# differ from the defaults (extract.limit, train.lr) besides its dataset, its own models, fusion and seeds.
BEST_CONFIG = {
    "extract.dataset": "toy",
    "extract.models": ("dec", "enc", "emb"),
    "extract.limit": 500,
    "train.lr": 3e-4,
    "train.fusion": "concat",
    "extract.show_progress": False,
}


def perf(dim: int, mib: float, extract: float, head: float) -> dict[str, float]:
    """The ``perf/*`` metrics of a trained (not swept) trial."""
    return {
        "perf/fused_dim": dim,
        "perf/feature_bytes": mib * MIB,
        "perf/extract_ms_per_sample": extract,
        "perf/head_ms_per_sample": head,
        "perf/fit_s": 1.0,
        "perf/param_count": 1000,
        "perf/peak_rss_mb": 100,
    }


def trial(
    models: str,
    layers: dict[str, str],
    val: float,
    test: float,
    *,
    f1: float | None = None,
    fusion: str = "concat",
    seeds: list[float] | None = None,
    cost: dict[str, float] | None = None,
    state: str = "COMPLETE",
    sweep: tuple[list[float], list[float]] | None = None,
    preds: list[np.ndarray] | None = None,
    config: dict[str, Any] | None = None,
    baseline: tuple[str, float] | None = None,
    units: list[float] | None = None,
    sweep_units: list[list[float]] | None = None,
    per_fold: int | None = None,
) -> dict[str, Any]:
    """One trial: ``seeds`` are its per-unit test accuracies (one unit at ``test`` when None).

    ``per_fold`` is its ``seeds`` param when the units are folds x seeds (default: one fold, a unit per seed).

    ``baseline`` (classifier, C) makes it a ``tfidf-baseline`` trial, logged with no models, as that preset does.
    ``units`` are its per-unit validation accuracies (``cv/val_acc``; without them it has only ``seed/val_acc``, as
    runs from before cross-validation), ``sweep_units`` a sweep's ``cv/sweep_val_acc.npy`` (layers x units).
    """
    return {
        "models": models,
        "layers": layers,
        "val": val,
        "test": test,
        "f1": val - 0.01 if f1 is None else f1,
        "fusion": fusion,
        "seeds": seeds or [test],
        "perf": cost or {},
        "state": state,
        "sweep": sweep,
        "preds": preds,
        "config": config,
        "baseline": baseline,
        "units": units,
        "sweep_units": sweep_units,
        "per_fold": per_fold,
    }


DEC = perf(16, 1.0, 2.0, 0.1)
PAIR = perf(32, 1.5, 3.0, 0.2)
TRIO = perf(48, 2.0, 3.5, 0.3)
# Like a real sweep, the cost of training every layer at once: 5 layers' bytes, more than any single fit reads.
SWEEP = {"perf/extract_ms_per_sample": 2.0, "perf/feature_bytes": 5 * 2**20, "perf/fused_dim": 16}
# toy, dec: best layer 3 (val .85, test .83), last layer 4 (val .82, test .80): gains +.03 / +.03.
# Its seeds [.82, .84, .83]: mean .83, std .01, 95% bootstrap CI [.82, .84] (each end has 1/27 > 2.5% mass).
# Per-unit validation scores (3 units) of its layers: layer 3 [.86, .84, .85] is the best (SE .01 / sqrt 3);
# layer 2 (differences [-.04, .14, .05]: mean .05, SE .09 / sqrt 3 = .052) and layer 4 ([-.04, .08, .05]: mean .03,
# SE .036) are tied with it, layers 0 and 1 are not: tie set {2, 3, 4}; one-se picks layer 2 (the shallowest).
DEC_UNITS = [[0.60] * 3, [0.70] * 3, [0.90, 0.70, 0.80], [0.86, 0.84, 0.85], [0.90, 0.76, 0.80]]
SWEEP_TOY = [
    trial(
        "dec",
        {"dec": "3"},
        0.85,
        0.83,
        f1=0.84,
        seeds=[0.82, 0.84, 0.83],
        cost=SWEEP,
        sweep=([0.60, 0.70, 0.80, 0.85, 0.82], [0.58, 0.69, 0.79, 0.83, 0.80]),
        units=DEC_UNITS[3],
        sweep_units=DEC_UNITS,
    ),
    # toy, enc: best layer 1 (val .79, test .80), last layer 2 (val .78, test .77): gains +.01 / +.03.
    # A sweep from before cross-validation: one value per layer, so SE 0 and a tie set of layer 1 alone.
    trial("enc", {"enc": "1"}, 0.79, 0.80, cost=SWEEP, sweep=([0.70, 0.79, 0.78], [0.69, 0.80, 0.77])),
    trial("dec", {"dec": "0"}, 0.99, 0.99, state="PRUNED", cost=DEC),  # never picked
]
SEARCH_TOY = [
    # The best single model on toy (val .86 beats the sweep's .85); seeds [.83, .85, .84].
    trial("dec", {"dec": "3"}, 0.86, 0.84, f1=0.85, seeds=[0.83, 0.85, 0.84], cost=DEC, preds=SINGLE_PREDS),
    # Beats the sweep's layer 2 on validation (.84 > .80) but the sweep's point stays: same head for every layer.
    trial("dec", {"dec": "2"}, 0.84, 0.86, cost=DEC),
    trial("dec", {"dec": "mean:2,3,4"}, 0.83, 0.82, cost=perf(16, 3.0, 2.0, 0.1)),  # search style: not a last-k row
    # emb's only single layer (source: trial); one input through residual:sum, so its label names the fusion.
    trial("emb", {"emb": "1"}, 0.70, 0.71, fusion="residual:sum", cost=perf(8, 0.25, 0.5, 0.05)),
    trial("dec,enc", {"dec": "3", "enc": "1"}, 0.87, 0.85, fusion="residual:quaternion", cost=PAIR),
    trial("dec,enc", {"dec": "1", "enc": "1"}, 0.95, 0.95, state="FAIL"),
    trial(
        "dec,enc", {"dec": "1", "enc": "1"}, 0.55, 0.0, fusion="moe", state="PRUNED"
    ),  # grid cell "pruned (0.5500) (search)"
]
LAST_K = [  # dec on toy: the best aggregation on validation is the mean of the last 2 layers (val .84, test .82)
    trial("dec", {"dec": "mean:last1"}, 0.82, 0.80, cost=DEC),
    trial("dec", {"dec": "mean:last2"}, 0.84, 0.82, seeds=[0.81, 0.82, 0.83], cost=perf(16, 2.0, 2.0, 0.1)),
    trial("dec", {"dec": "mean:last3"}, 0.83, 0.815, cost=perf(16, 3.0, 2.0, 0.1)),
    trial("dec", {"dec": "max:last2"}, 0.81, 0.79, cost=perf(16, 2.0, 2.0, 0.1)),
    trial("dec", {"dec": "min:last2"}, 0.78, 0.77, cost=perf(16, 2.0, 2.0, 0.1)),
]
# concat and hadamard tie on val .88; concat wins on val/f1 (.87 > .86): the best toy configuration. Per unit:
# concat [.90, .86, .88]; hadamard [.88, .88, .88] (equal mean: tied); sum [.87, .85, .86] (differences
# [.03, .01, .02]: mean .02 > SE .0058, not tied); the search's residual:quaternion (.87) has one unit, so it is not
# paired (SE 0) and not tied. Tie set of the pair: {concat, hadamard}. Over every toy trial the multi-model concat
# (seed/val_acc [.87] x 3: differences [.03, -.01, .01], mean .01 <= SE .0115) joins them.
FUSION = [
    trial(
        "dec,enc",
        {"dec": "3", "enc": "1"},
        0.88,
        0.86,
        f1=0.87,
        seeds=[0.85, 0.86, 0.87],
        cost=PAIR,
        preds=FUSION_PREDS,
        config=BEST_CONFIG,
        units=[0.90, 0.86, 0.88],
    ),
    trial("dec,enc", {"dec": "3", "enc": "1"}, 0.86, 0.87, fusion="sum", cost=PAIR, units=[0.87, 0.85, 0.86]),
    trial("dec,enc", {"dec": "3", "enc": "1"}, 0.88, 0.84, f1=0.86, fusion="hadamard", cost=PAIR, units=[0.88] * 3),
    trial("dec,enc", {"dec": "2", "enc": "1"}, 0.87, 0.89, cost=PAIR),  # concat again, lower val: not chosen
    # Pruned at val .62 and .64: the grid shows matmul as "pruned (0.6400)"; the pruned sum is hidden by the finished
    # one.
    trial("dec,enc", {"dec": "3", "enc": "1"}, 0.62, 0.0, fusion="matmul", state="PRUNED"),
    trial("dec,enc", {"dec": "3", "enc": "1"}, 0.64, 0.0, fusion="matmul", state="PRUNED"),
    trial("dec,enc", {"dec": "3", "enc": "1"}, 0.99, 0.0, fusion="sum", state="PRUNED"),
    # A pair of which every fusion was pruned (emb + enc): listed under the pair table, its own grid column.
    trial("enc,emb", {"enc": "1", "emb": "1"}, 0.60, 0.0, fusion="concat", state="PRUNED"),
]
MULTI = [  # dec+enc+emb: concat (val .87) beats sum (val .86) although sum tests higher; seeds mean .85, CI [.84, .86]
    trial("dec,enc,emb", {"dec": "3", "enc": "1", "emb": "1"}, 0.87, 0.85, seeds=[0.84, 0.85, 0.86], cost=TRIO),
    trial("dec,enc,emb", {"dec": "3", "enc": "1", "emb": "1"}, 0.86, 0.88, fusion="sum", cost=TRIO),
]
# toy2, dec: best layer 2 (val .70, test .72), last layer 4 (val .66, test .60): gains +.04 / +.12.
TOY2 = [
    trial(
        "dec",
        {"dec": "2"},
        0.70,
        0.72,
        cost=SWEEP,
        sweep=([0.50, 0.60, 0.70, 0.65, 0.66], [0.50, 0.61, 0.72, 0.64, 0.60]),
    )
]
EMPTY = [trial("dec", {"dec": "1"}, 0.5, 0.5, state="PRUNED"), trial("enc", {"enc": "1"}, 0.5, 0.5, state="FAIL")]
# TF-IDF baseline on toy: logistic regression C=1 is chosen on validation (val .80, test .78).
BASELINE = [
    trial("", {}, 0.78, 0.79, fusion="none", baseline=("svm", 1.0), cost=perf(0, 0.5, 0.0, 0.01)),
    trial(
        "",
        {},
        0.80,
        0.78,
        fusion="none",
        baseline=("logreg", 1.0),
        seeds=[0.77, 0.78, 0.79],
        cost=perf(0, 0.5, 0.0, 0.01),
    ),
]

STUDIES = [  # (study, preset, dataset, trials)
    ("sweep-toy", "layer-sweep", "toy", SWEEP_TOY),
    ("search-toy", "search", "toy", SEARCH_TOY),
    ("lastk-toy", "last-k", "toy", LAST_K),
    ("fusion-toy", "fusion-methods", "toy", FUSION),
    ("multi-toy", "multi-model", "toy", MULTI),
    ("sweep-toy2", "layer-sweep", "toy2", TOY2),
    ("empty-toy", "search", "toy", EMPTY),
    ("baseline-toy", "tfidf-baseline", "toy", BASELINE),
]
REPORTED = [s[0] for s in STUDIES if s[0] != "empty-toy"]


def config_for(root: Path) -> BenchConfig:
    """Config pointing tracking at ``root/mlflow.db`` and ``root/artifacts``, reports under ``root/reports``."""
    return load_config(
        env={},
        **{
            "tracking.uri": f"sqlite:///{root}/mlflow.db",
            "tracking.artifact_root": str(root / "artifacts"),
            "report.out_dir": str(root / "reports"),
        },
    )


def _log_trial(
    mlc: Any, exp_id: str, parent: str, study: str, preset: str, dataset: str, number: int, t: dict[str, Any]
) -> None:
    models = [m for m in t["models"].split(",") if m]
    tags = {
        tracking.TAG_PARENT: parent,
        tracking.TAG_STUDY: study,
        tracking.TAG_KIND: tracking.KIND_TRIAL,
        tracking.TAG_TRIAL: str(number),
        tracking.TAG_STATE: t["state"],
        tracking.TAG_PRESET: preset,
    }
    if t["sweep"]:
        tags[tracking.TAG_SWEEP_MODEL] = models[0]
    run_id = mlc.create_run(exp_id, run_name=f"{study}#{number}", tags=tags).info.run_id
    params = {
        "preset": preset,
        "dataset": dataset,
        "models": t["models"],
        "n_models": len(models),
        "fusion": t["fusion"],
        "seeds": t["per_fold"] or len(t["seeds"]),
        "train.lr": 0.0001,
        "train.hidden_dims": "256",
        **{f"layer.{m}": s for m, s in t["layers"].items()},
    }
    if t["baseline"]:
        params.update({"baseline.classifier": t["baseline"][0], "baseline.C": t["baseline"][1]})
        del params["train.lr"], params["train.hidden_dims"]
    metrics = {"val/acc": t["val"], "val/f1": t["f1"], "test/acc": t["test"], "test/f1": t["test"] - 0.01, **t["perf"]}
    histories = {"seed/test_acc": t["seeds"], "seed/val_acc": [t["val"]] * len(t["seeds"])}
    if t["sweep"]:
        histories["sweep/val_acc"], histories["sweep/test_acc"] = t["sweep"]
    if t["units"]:
        histories[tracking.CV_VAL_ACC] = t["units"]
    complete = t["state"] == "COMPLETE"
    # Like real trials: a pruned one keeps the last validation accuracy it reported; nothing else is scored.
    scored = metrics if complete else {"val/acc": t["val"]} if t["state"] == "PRUNED" else {}
    tracking.log_run_data(mlc, run_id, params=params, metrics=scored, histories=histories if complete else {})
    if t["sweep_units"] and complete:
        tracking.log_array(mlc, run_id, np.array(t["sweep_units"]), tracking.SWEEP_UNITS_ARTIFACT)
    for seed, pred in enumerate(t["preds"] or []):
        tracking.log_array(mlc, run_id, pred, tracking.PRED_ARTIFACT.format(seed=seed))
    if t["config"]:
        tracking.log_text(mlc, run_id, to_yaml(load_config(env={}, **t["config"])), "config.yaml")
    mlc.set_terminated(run_id, "FAILED" if t["state"] == "FAIL" else "FINISHED")


def build_store(
    root: Path,
    studies: list[tuple[str, str, str, list[dict[str, Any]]]] | None = None,
) -> tuple[BenchConfig, dict[str, str]]:
    """Write every study of ``studies`` (default ``STUDIES``) into a fresh store under ``root``.

    Returns:
        The config pointing at the store and ``{study: parent run id}``.
    """
    cfg = config_for(root)
    mlc = tracking.client(cfg.tracking)
    parents: dict[str, str] = {}
    for study, preset, dataset, trials in STUDIES if studies is None else studies:
        exp_id = tracking.ensure_experiment(mlc, tracking.experiment_name(dataset), cfg.tracking)
        parent = mlc.create_run(
            exp_id,
            run_name=study,
            tags={tracking.TAG_STUDY: study, tracking.TAG_KIND: tracking.KIND_STUDY, tracking.TAG_PRESET: preset},
        ).info.run_id
        parents[study] = parent
        tracking.log_array(mlc, parent, LABELS, tracking.TEST_LABELS_ARTIFACT)
        for number, t in enumerate(trials):
            _log_trial(mlc, exp_id, parent, study, preset, dataset, number, t)
        mlc.set_terminated(parent, "FINISHED")
    return cfg, parents


# The scale of `layerfuse reproduce` (issue 6): 4 datasets x 6 presets, 3 seeds, models of 31, 7, 4 and 1 layers.
SCALE_MODELS = {"smollm2-135m": 30, "minilm-l6": 6, "minilm-l3": 3, "tfidf": 0}  # depth L: layers 0..L
SCALE_DATASETS = {"sst2": 0.85, "mr": 0.78, "r8": 0.95, "r52": 0.90}  # a plausible best accuracy per dataset


def scale_studies(
    datasets: dict[str, float] | None = None,
    models: dict[str, int] | None = None,
    seeds: int = 3,
    search_trials: int = 30,
) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """Synthetic studies shaped like a full reproduction: every preset on every dataset, random but seeded values."""
    from itertools import combinations

    from lightning_modules.fusion_index import fusion_names

    datasets = SCALE_DATASETS if datasets is None else datasets
    models = SCALE_MODELS if models is None else models
    rng = np.random.default_rng(0)
    names = list(models)

    def scored(top: float, spread: float, **kw: Any) -> dict[str, Any]:
        val = float(np.clip(top - abs(rng.normal(0, spread)), 0.3, 0.999))
        test = float(np.clip(val + rng.normal(0, 0.01), 0.3, 0.999))
        per_seed = [float(np.clip(test + rng.normal(0, 0.006), 0.3, 0.999)) for _ in range(seeds)]
        return trial(val=val, test=float(np.mean(per_seed)), seeds=per_seed, **kw)

    out = []
    for dataset, top in datasets.items():

        def cost(ms: tuple[str, ...]) -> dict[str, float]:
            return perf(
                512 * len(ms),
                0.5 + 4.0 * sum(models[m] > 3 for m in ms),
                0.1 + sum(models[m] for m in ms) / 3,
                0.01 * len(ms),
            )

        base = [
            scored(top - 0.04, 0.01, models="", layers={}, fusion="none", baseline=(c, x), cost=perf(0, 0.4, 0, 0.01))
            for c in ("svm", "logreg")
            for x in (0.1, 1.0, 10.0)
        ]
        sweeps = []
        for m, depth in models.items():
            val = [
                float(top - 0.05 - 0.1 * abs(i / max(depth, 1) - 0.7) + rng.normal(0, 0.005)) for i in range(depth + 1)
            ]  # peaks at 70% depth, as decoders tend to
            test = [v + float(rng.normal(0, 0.01)) for v in val]
            chosen = int(np.argmax(val))
            sweeps.append(
                trial(
                    m,
                    {m: str(chosen)},
                    val[chosen],
                    test[chosen],
                    sweep=(val, test),
                    cost={"perf/extract_ms_per_sample": 1.0},
                    seeds=[test[chosen] + float(rng.normal(0, 0.005)) for _ in range(seeds)],
                )
            )
        lastk = [
            scored(top - 0.04, 0.02, models=m, layers={m: f"{agg}:last{k}"}, cost=cost((m,)))
            for m, depth in models.items()
            for agg in ("mean", "max", "min")
            for k in range(1, min(10, depth + 1) + 1)
        ]
        fusion = [
            scored(top - 0.02, 0.02, models=",".join(p), layers={m: "-1" for m in p}, fusion=f, cost=cost(p))
            for p in combinations(names, 2)
            for f in fusion_names()
        ]
        multi = [
            scored(top - 0.015, 0.01, models=",".join(p), layers={m: "-1" for m in p}, cost=cost(p))
            for k in range(3, len(names) + 1)
            for p in combinations(names, k)
        ]
        search = []
        for _ in range(search_trials):
            chosen = tuple(m for m in names if rng.random() < 0.5) or (names[0],)
            search.append(
                scored(
                    top - 0.01,
                    0.03,
                    models=",".join(chosen),
                    cost=cost(chosen),
                    layers={m: str(int(rng.integers(0, models[m] + 1))) for m in chosen},
                    fusion=str(rng.choice(["concat", "sum", "residual:sum"])),
                )
            )
        out += [
            (f"{preset}-{dataset}", preset, dataset, trials)
            for preset, trials in (
                ("tfidf-baseline", base),
                ("layer-sweep", sweeps),
                ("last-k", lastk),
                ("fusion-methods", fusion),
                ("multi-model", multi),
                ("search", search),
            )
        ]
    return out
