"""Does racing keep the answers, and what does it save? A layer sweep three ways, side by side in one run.

For each (dataset, model) whose caches exist, the model's layer sweep is run as today's single split with
``--seeds`` seeds, as the full ``--cv-folds`` x ``--seeds`` grid (``study.race=false``), and raced
(``studies.trials.racing``: the ridge probe, then the race), in turn, in this process, on the same caches. Per sweep it
records the wall seconds and the head-epochs trained; per rule (``argmax``, ``one-se``) the chosen layer and the
tie set of the full grid and of the raced sweep (the raced heads are the full grid's, bit for bit, so a difference
can only come from a layer the probe or the race stopped), their Jaccard index, and the layers each rule stopped.
A benchmark, never a test: it prints a markdown table and writes every record as JSON (``--out``).

    python -m benchmark.bench.race --datasets mr,r8 --models minilm-l6,minilm-l3 --cv-folds 5 --seeds 3 \
        --set paths.cache_dir=.cache/features --set extract.max_length=256 --set extract.limit=8000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.config import BenchConfig, load_config, with_values
from benchmark.core.errors import UserError
from benchmark.core.study_data import ModelDirs, resolve_data
from lightning_modules.fit import sweep_units
from lightning_modules.scores import LayerScore
from studies.choice.val_record import unit_val_rows
from studies.trials.best_layers import choose_layer
from studies.trials.racing import screen_outcome, sweep_screen

RULES = ("argmax", "one-se")


def _timed(cfg: BenchConfig, d: ModelDirs, raced: bool) -> tuple[list[list[LayerScore]], float]:
    start = time.perf_counter()
    screen = sweep_screen(cfg, d) if raced else None
    scores = sweep_units(d.train, d.test, cfg, cfg.study.seeds, val_dir=d.val, screen=screen)
    return scores, time.perf_counter() - start


def _choices(scores: list[list[LayerScore]], d: ModelDirs) -> dict[str, dict[str, Any]]:
    layers = [s.layer for s in scores[0]]
    val = np.array([[s.val_acc for s in unit] for unit in scores]).T  # (layers, units)
    rows = [unit_val_rows(d, [unit[i] for unit in scores]) for i in range(len(layers))]
    out = {}
    for rule in RULES:
        picked = choose_layer(val, layers, rule, rows)
        out[rule] = {"chosen": layers[picked.chosen], "tied": [layers[i] for i in picked.tied]}
    return out


def _head_epochs(scores: list[list[LayerScore]]) -> int:
    return sum(s.epochs for unit in scores for s in unit)


def compare(cfg: BenchConfig, d: ModelDirs) -> dict[str, Any]:
    """One model's sweep as the single split, the full grid and raced; their costs and choices."""
    split_cfg = with_values(cfg, {"data.cv_folds": 0, "study.race": False})
    split, split_s = _timed(split_cfg, d, False)
    full, full_s = _timed(with_values(cfg, {"study.race": False}), d, False)
    raced, raced_s = _timed(with_values(cfg, {"study.race": True}), d, True)
    a, b = _choices(full, d), _choices(raced, d)
    record: dict[str, Any] = {
        "wall_s": {"split": split_s, "full": full_s, "raced": raced_s},
        "head_epochs": {"split": _head_epochs(split), "full": _head_epochs(full), "raced": _head_epochs(raced)},
        "screen": screen_outcome(raced),
        "split_choice": _choices(split, d)["argmax"]["chosen"],
    }
    for rule in RULES:
        ta, tb = set(a[rule]["tied"]), set(b[rule]["tied"])
        record[rule] = {
            "full": a[rule],
            "raced": b[rule],
            "same_choice": a[rule]["chosen"] == b[rule]["chosen"],
            "jaccard": len(ta & tb) / len(ta | tb),
        }
    return record


def _row(dataset: str, model: str, r: dict[str, Any]) -> str:
    w, e = r["wall_s"], r["head_epochs"]
    stopped = sum(1 for o in r["screen"] or [] if o["stopped"])
    cells = [
        dataset,
        model,
        f"{len(r['screen'] or [])} / {stopped}",
        f"{w['split']:.0f} / {w['full']:.0f} / {w['raced']:.0f}",
        f"{w['raced'] / w['split']:.2f}x / {w['raced'] / w['full']:.2f}x",
        f"{e['raced'] / e['full']:.2f}",
        " / ".join(f"{r[rule]['full']['chosen']} / {r[rule]['raced']['chosen']}" for rule in RULES),
        " / ".join(f"{r[rule]['jaccard']:.2f}" for rule in RULES),
        ", ".join(str(x) for x in r["argmax"]["full"]["tied"]),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison from the command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="mr")
    parser.add_argument("--models", default="minilm-l6")
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write every record as JSON here")
    parser.add_argument("-s", "--set", dest="sets", action="append", default=[], help="config override a.b=v")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    records: dict[str, dict[str, Any]] = {}
    lines = []
    for dataset in args.datasets.split(","):
        for model in args.models.split(","):
            values = {
                "extract.dataset": dataset,
                "extract.models": (model,),
                "data.cv_folds": args.cv_folds,
                "study.seeds": args.seeds,
            }
            cfg = load_config(overrides=args.sets, **values)
            try:
                d = resolve_data(cfg, cfg.extract.models).dirs[model]
            except UserError as err:
                print(f"skipped {dataset}/{model}: {err}")
                continue
            records[f"{dataset}/{model}"] = r = compare(cfg, d)
            lines.append(_row(dataset, model, r))
            print(lines[-1], flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) at the end: {load}")
    print(
        f"\n| dataset | model | layers / stopped | wall s: split / {args.cv_folds}x{args.seeds} full / raced "
        "| raced vs split / vs full | head-epochs raced / full | chosen full / raced (argmax, one-se) "
        "| tie-set Jaccard (argmax / one-se) | full grid's tie set (argmax) |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|---|")
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
