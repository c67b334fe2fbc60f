"""Do tie sets keep their promise? Coverage of the single-layer choice over redrawn train/test splits.

On cached features of one dataset (one or more models with caches of the same texts), the train and test caches
are pooled; each of R draws cuts a new stratified train/test split from the pool (the original test share), writes
them as caches, runs the layer sweep with ``data.cv_folds`` folds (the study's engine, ``sweep_units``) and ranks
every (model, layer) candidate on validation twice: with the old standard error (paired per-unit differences) and
with the calibrated one (``studies.choice.row_se``). Per draw it records the tie set, the choice of ``argmax`` and
``one-se`` and the test-best candidate (the highest mean test accuracy of the fold heads); it prints coverage (how
often the tie set holds the test-best candidate), the median tie-set size and the mean regret (test accuracy of
the choice minus the test-best's, points) per SE and rule.

    python -m benchmark.bench.tie_coverage --dataset mr --model minilm-l6 --draws 20 --rows 3000 \
        --set paths.cache_dir=.cache/features --set extract.max_length=256 --set extract.limit=8000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.cache import FeatureCache, FeatureKey
from benchmark.core.cache_writer import CacheWriter
from benchmark.core.config import BenchConfig, load_config
from benchmark.core.keys import load_text_split, resolve_features
from benchmark.core.models import resolve_model
from benchmark.core.row_split import stratified_split
from lightning_modules.fit import sweep_units
from studies.choice.row_se import METHOD
from studies.choice.selection import Units, cost_key, select
from studies.choice.val_record import results_rows
from studies.trials.flops import infer_gflops, mean_tokens

RULES = ("argmax", "one-se")
SES = ("per-unit", METHOD)


def _pool(
    cfg: BenchConfig, rows: int | None, train_only: bool, layers: list[int] | None
) -> tuple[dict[str, dict[int, np.ndarray]], np.ndarray, float]:
    """Per model, each chosen layer's pooled ``(N, H)`` rows (train then test), the labels, and the test share.

    ``train_only`` pools the train cache alone (its test share is the original one); ``layers`` restricts the
    candidates (default: every layer).
    """
    texts = {s: load_text_split(cfg, s) for s in ("train", "test")}
    share = len(texts["test"].texts) / (len(texts["train"].texts) + len(texts["test"].texts))
    labels: np.ndarray | None = None
    feats: dict[str, dict[int, np.ndarray]] = {}
    for model in cfg.extract.models:
        used = ("train",) if train_only else ("train", "test")
        caches = [FeatureCache(resolve_features(cfg, model, texts[s]).path) for s in used]
        y = np.concatenate([c.labels() for c in caches])
        if labels is not None and not np.array_equal(labels, y):
            raise SystemExit(f"{model}'s caches hold other rows than the first model's: extract them with one limit")
        labels = y
        chosen = layers if layers is not None else range(caches[0].num_layers + 1)
        feats[model] = {i: np.concatenate([np.asarray(c.layer(i)) for c in caches]) for i in chosen}
    if labels is None:
        raise SystemExit("no model given")
    keep = np.arange(len(labels))
    if rows is not None and rows < len(labels):  # a fixed seeded subsample, the same for every draw
        keep = np.sort(np.random.default_rng(0).choice(len(labels), rows, replace=False))
    return {m: {i: x[keep] for i, x in by_layer.items()} for m, by_layer in feats.items()}, labels[keep], share


def _write(root: Path, model: str, split: str, layers: list[np.ndarray], labels: np.ndarray, draw: int) -> Path:
    key = FeatureKey(model, f"draw{draw}", "coverage", "0" * 64, split, "mean", 0, "fp16")
    stack = np.stack(layers)  # (L+1, n, H)
    with CacheWriter(root / key.relpath(), key, n=stack.shape[1], chunk_size=stack.shape[1]) as w:
        for i in w.missing_chunks():
            w.write_chunk(i, np.arange(stack.shape[1]), stack)
        names = [str(c) for c in range(int(labels.max()) + 1)]
        w.finalize(labels, {"label_names": names, "texts_sha256": f"{split}-{draw}", "extract_ms_per_sample": 0.0})
    return root / key.relpath()


def _candidates(cfg: BenchConfig, models: list[str]) -> dict[str, list[float]]:
    """Per model, the GFLOPs per text of reading each layer (head excluded: every layer's head is the same)."""
    train = load_text_split(cfg, "train")
    out = {}
    for model in models:
        meta = FeatureCache(resolve_features(cfg, model, train).path).meta
        spec = {model: resolve_model(model, cfg.paths.models_dir)}
        tokens = {model: mean_tokens(meta)}
        out[model] = [infer_gflops({model: str(i)}, spec, tokens, 0) for i in range(int(meta["num_layers"]) + 1)]
    return out


def one_draw(cfg: BenchConfig, pool: Any, labels: np.ndarray, share: float, draw: int, flops: Any) -> dict[str, Any]:
    """Cut draw ``draw``'s split, sweep every model, rank the candidates both ways; the draw's record."""
    train_rows, test_rows = stratified_split(labels, share, draw)
    names, old, new, test, costs = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model, by_layer in pool.items():
            layers = list(by_layer.values())  # the written caches hold the chosen layers only, as 0..k-1
            tr = _write(Path(tmp), model, "train", [x[train_rows] for x in layers], labels[train_rows], draw)
            te = _write(Path(tmp), model, "test", [x[test_rows] for x in layers], labels[test_rows], draw)
            scores = sweep_units(tr, te, cfg, cfg.study.seeds)  # scores[unit][position]
            layout = (max(cfg.data.cv_folds, 1), cfg.study.seeds)
            for pos, i in enumerate(by_layer):
                heads = [unit[pos] for unit in scores]
                accs = [h.val_acc for h in heads]
                rows = results_rows(heads, labels[train_rows], len(train_rows), False)
                names.append(f"{model}@{i}")
                old.append(Units(accs, layout))
                new.append(Units(accs, layout, rows))
                test.append(float(np.mean([h.test_acc for h in heads])))
                costs.append(cost_key(flops[model][i], 1, 0, 0, i))
    best_test = int(np.argmax(test))
    record: dict[str, Any] = {
        "draw": draw,
        "test_best": names[best_test],
        "test_acc": dict(zip(names, test, strict=True)),
    }
    for se, units in zip(SES, (old, new), strict=True):
        for rule in RULES:
            s = select(units, costs, rule)
            record[f"{se}/{rule}"] = {
                "chosen": names[s.chosen],
                "tied": [names[i] for i in s.tied],
                "covered": best_test in s.tied,
                "regret": 100 * (test[s.chosen] - test[best_test]),
            }
    return record


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SE and rule: coverage, median tie-set size, mean regret (points) over the draws."""
    out = []
    for se in SES:
        for rule in RULES:
            got = [r[f"{se}/{rule}"] for r in records]
            out.append(
                {
                    "se": se,
                    "rule": rule,
                    "coverage": float(np.mean([g["covered"] for g in got])),
                    "median_tie_set": float(statistics.median(len(g["tied"]) for g in got)),
                    "mean_regret_pts": float(np.mean([g["regret"] for g in got])),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the draws and print the table (and write every draw's record to ``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", action="append", required=True, help="repeat for a two-model choice")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--rows", type=int, default=None, help="a fixed seeded subsample of the pooled rows")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--test-share", type=float, default=None, help="test share of each draw (default: the original)")
    p.add_argument("--train-only", action="store_true", help="pool the train cache alone")
    p.add_argument("--layers", default=None, help="comma list of the candidate layers (default: all)")
    p.add_argument("--out", type=Path, default=None, help="JSON lines: one record per draw")
    p.add_argument("-s", "--set", action="append", default=[], help="config override a.b=value")
    args = p.parse_args(argv)
    sets = {"extract.dataset": args.dataset, "extract.models": tuple(args.model), "data.cv_folds": args.folds}
    cfg = load_config(overrides=args.set, **sets, **{"study.seeds": args.seeds})
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    pool, labels, share = _pool(cfg, args.rows, args.train_only, layers)
    share = args.test_share if args.test_share is not None else share
    flops = _candidates(cfg, list(args.model))
    records = []
    for draw in range(args.draws):
        start = time.perf_counter()
        records.append(one_draw(cfg, pool, labels, share, draw, flops))
        if args.out is not None:
            with args.out.open("a") as fh:
                fh.write(json.dumps(records[-1]) + "\n")
        r = records[-1]
        print(  # noqa: T201  # a benchmark's output
            f"draw {draw}: test-best {r['test_best']}, tied old {r['per-unit/argmax']['tied']}, "
            f"new {r[f'{METHOD}/argmax']['tied']} ({time.perf_counter() - start:.0f}s)",
            flush=True,
        )
    print(
        f"{args.dataset} {'+'.join(args.model)}: {len(labels)} pooled rows, {args.draws} draws, "  # noqa: T201
        f"{args.folds} folds x {args.seeds} seed(s)"
    )
    print("| SE | rule | coverage | median tie set | mean regret (pts) |\n|---|---|---:|---:|---:|")  # noqa: T201
    for row in summarise(records):
        print(  # noqa: T201
            f"| {row['se']} | {row['rule']} | {row['coverage']:.0%} | {row['median_tie_set']:.1f} | "
            f"{row['mean_regret_pts']:+.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
