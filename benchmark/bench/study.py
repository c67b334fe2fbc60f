"""Study throughput, side by side in one run (a benchmark, never a test).

Trials per minute of the ``search`` preset on cached features, with and without median pruning, each in its own
throw-away stores (under ``$TMPDIR``).

    python -m benchmark.bench.study --dataset mr --models minilm-l6,minilm-l3 --trials 20 --max-length 256 --dtype bf16

With ``--cv-folds K``, instead: the wall time of each preset in ``--presets`` as a single-split study, a K-fold
study and a K-fold study with ``study.race`` (the probe and the race of ``studies.trials.racing``), all with ``--seeds``
seeds, in turn and each in fresh stores (the first two with ``study.race=false``: the engine as before racing);
the stored unit sweeps of the models (``studies.trials.sweep_store``) are deleted before each layer-sweep study, so it
fits them, and the presets after it reuse them, as in ``layerfuse reproduce``.

    python -m benchmark.bench.study --dataset mr --models minilm-l3,tfidf --cv-folds 5 --seeds 3 \
        --presets tfidf-baseline,layer-sweep,fusion-methods --set study.fusions=concat --max-length 256 --limit 8000

The caches must exist (``layerfuse extract --model minilm-l6,minilm-l3 --dataset mr --max-length 256 --dtype bf16``).
Trials per minute count trials that trained (complete, or pruned while training); trials pruned before training
(search space version 1 pruned those that selected no model) take milliseconds and are reported apart, so they do
not inflate it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from benchmark.core.config import load_config
from benchmark.core.optuna_store import make_storage
from studies.run.runner import run_study
from studies.trials.presets import SEARCH


def measure(
    dataset: str, models: tuple[str, ...], trials: int, pruning: bool, seed: int, dtype: str, max_length: int | None
) -> dict[str, float]:
    """Run one fresh ``search`` study and return its wall time, trained trials per minute and outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        sets: dict[str, Any] = {
            "extract.dataset": dataset,
            "extract.models": models,
            "extract.show_progress": False,
            "extract.dtype": dtype,
            "extract.max_length": max_length,
            "study.preset": SEARCH,
            "study.trials": trials,
            "study.pruning": pruning,
            "study.name": "speed",
            "study.storage": f"sqlite:///{tmp}/optuna.db",
            "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
            "tracking.artifact_root": str(Path(tmp) / "artifacts"),
            "train.seed": seed,
        }
        cfg = load_config(**sets)
        start = time.perf_counter()
        out = run_study(cfg)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name="speed", storage=make_storage(cfg.study.storage, cfg.study.heartbeat))
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        untrained = sum("prune_reason" in t.user_attrs and not t.intermediate_values for t in pruned)
    trained = out.complete + out.pruned - untrained
    return {
        "wall_s": wall,
        "trials_per_min": 60 * trained / wall,
        "complete": out.complete,
        "pruned_training": out.pruned - untrained,
        "pruned_untrained": untrained,
        "best_val": out.best_value or float("nan"),
        "best_test": out.best_test_acc or float("nan"),
    }


VARIANTS = (("single split", False, False), ("folds", True, False), ("folds, raced", True, True))


def measure_folds(
    base: dict[str, Any], presets: list[str], folds: int, sets: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per preset and variant: wall seconds, trials, the best trial's validation and test accuracy and its choice.

    The variants (``VARIANTS``): the single split, then ``folds`` folds without and with ``study.race``.
    """
    import shutil

    from benchmark.core.study_data import resolve_data

    rows: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in presets}
    for variant, cv, race in VARIANTS:
        with tempfile.TemporaryDirectory() as tmp:
            for preset in presets:
                values = {
                    **base,
                    "study.preset": preset,
                    "study.name": f"speed-{preset}",
                    "study.storage": f"sqlite:///{tmp}/optuna.db",
                    "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
                    "tracking.artifact_root": str(Path(tmp) / "artifacts"),
                    "data.cv_folds": folds if cv else 0,
                    "study.race": race,
                }
                cfg = load_config(overrides=sets, **values)
                if preset == "layer-sweep":
                    for d in resolve_data(cfg, cfg.extract.models).dirs.values():
                        shutil.rmtree(d.train / "sweeps", ignore_errors=True)
                start, cpu = time.perf_counter(), time.process_time()
                out = run_study(cfg)
                wall = time.perf_counter() - start
                study = optuna.load_study(study_name=out.name, storage=make_storage(cfg.study.storage, 1.0))
                best = study.best_trial
                chosen = {
                    **best.params,
                    **({"layer": best.user_attrs["best_layer"]} if "best_layer" in best.user_attrs else {}),
                }
                rows[preset][variant] = {
                    "wall_s": wall,
                    "cpu_s": time.process_time() - cpu,
                    "trials": out.complete + out.pruned,
                    "best_val": best.value or float("nan"),
                    "best_test": best.user_attrs.get("test_acc", float("nan")),
                    "chosen": ", ".join(f"{k}={v}" for k, v in chosen.items()),
                }
                logging.getLogger("benchmark.bench.study").warning("%s %s: %s", preset, variant, rows[preset][variant])
    return rows


def _print_folds(rows: dict[str, dict[str, dict[str, Any]]], folds: int, seeds: int, title: str) -> None:
    names = [v for v, _, _ in VARIANTS]
    print(
        f"\n| {title}, {seeds} seeds | "
        + " | ".join(f"{n.replace('folds', f'{folds} folds')}: wall s (x split)" for n in names)
        + " | best val acc | its test acc | chosen |"
    )
    print("|---|" + "---:|" * len(names) + "---|---|---|")
    for preset, r in rows.items():
        split = r[names[0]]["wall_s"]
        cells = [f"{r[n]['wall_s']:.0f} ({r[n]['wall_s'] / split:.2f}x)" for n in names]
        for key, fmt in (("best_val", "{:.4f}"), ("best_test", "{:.4f}"), ("chosen", "{}")):
            cells.append(" / ".join(fmt.format(r[n][key]) for n in names))
        print(f"| {preset} | " + " | ".join(cells) + " |")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="r8")
    parser.add_argument("--models", default="minilm-l6,minilm-l3")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="dtype of the cached features to use (as extracted)")
    parser.add_argument("--max-length", type=int, default=None, help="max length of the cached features (as extracted)")
    parser.add_argument("--limit", type=int, default=None, help="extract.limit of the cached features (as extracted)")
    parser.add_argument("--cv-folds", type=int, default=0, help="compare K-fold studies with single-split ones")
    parser.add_argument("--presets", default="layer-sweep", help="presets of the fold comparison")
    parser.add_argument("--seeds", type=int, default=3, help="study.seeds of the fold comparison")
    parser.add_argument("-s", "--set", dest="sets", action="append", default=[], help="config override a.b=v")
    return parser.parse_args(argv)


def _compare_folds(args: argparse.Namespace, models: tuple[str, ...], started: dt.datetime) -> None:
    """``--cv-folds``: each preset as a single-split, a K-fold and a raced K-fold study; prints one table."""
    base = {
        "extract.dataset": args.dataset,
        "extract.models": models,
        "extract.show_progress": False,
        "extract.dtype": args.dtype,
        "extract.max_length": args.max_length,
        "extract.limit": args.limit,
        "study.seeds": args.seeds,
        "study.pruning": True,
        "study.refit": False,  # the goal is the cost of scoring candidates; the refit is one more fit either way
        "train.seed": args.seed,
    }
    presets = [p for p in args.presets.split(",") if p]
    rows_cv = measure_folds(base, presets, args.cv_folds, args.sets)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) at the end: {load}")
    _print_folds(rows_cv, args.cv_folds, args.seeds, f"{args.dataset}, {'+'.join(models)}")


def _compare_pruning(args: argparse.Namespace, models: tuple[str, ...], started: dt.datetime) -> None:
    """The ``search`` preset without and with median pruning; prints one table and the speed-up."""
    rows = {
        name: measure(args.dataset, models, args.trials, pruning, args.seed, args.dtype, args.max_length)
        for name, pruning in (("no pruning", False), ("median pruning", True))
    }
    print(
        f"\n{started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"\n| search preset, {args.trials} trials, {args.dataset}, {'+'.join(models)} | wall s | trained trials/min "
        "| complete "
        "| pruned while training | pruned before training | best val acc | its test acc |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['wall_s']:.0f} | {r['trials_per_min']:.2f} | {r['complete']:.0f} | "
            f"{r['pruned_training']:.0f} | "
            f"{r['pruned_untrained']:.0f} | {r['best_val']:.4f} | {r['best_test']:.4f} |"
        )
    ratio = rows["median pruning"]["trials_per_min"] / rows["no pruning"]["trials_per_min"]
    print(f"\npruning speed-up: {ratio:.2f}x trained trials per minute")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line; returns the exit code."""
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    models = tuple(m for m in args.models.split(",") if m)
    started = dt.datetime.now(dt.UTC)
    if args.cv_folds:
        _compare_folds(args, models, started)
    else:
        _compare_pruning(args, models, started)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
