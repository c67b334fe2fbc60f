"""Training speed and memory on real cached features (a benchmark, never a test).

1. The batched all-layer sweep (``sweep_layers``) against L+1 sequential single-unit ``fit_units`` runs (one
   Lightning fit per layer, the paper's way), same seed and config: wall time and per-layer accuracy.
2. Peak RSS of one single-unit ``fit_units`` at N and 4N training rows, with N/2 and 2N test rows (the test
   split is scored and timed batch by batch, so it must not grow memory either). The caches are made from
   the real ones by drawing their rows (with replacement, seeded), so N can exceed the extracted size; the
   rows of a selected layer are read from disk on every batch exactly as for the real cache.

Every measurement runs in its own subprocess (clean peak RSS, no warm caches shared between them).
Writes ``<out>.json`` and ``<out>.md`` and prints the markdown.

    python -m benchmark.bench.train --model smollm2-135m --dataset mr --set extract.limit=2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.cache import FeatureCache, FeatureKey
from benchmark.core.cache_writer import CacheWriter
from benchmark.core.config import BenchConfig, load_config, with_values

log = logging.getLogger("benchmark.bench.train")


def _config(spec: dict[str, Any]) -> BenchConfig:
    return load_config(
        overrides=spec["sets"], **{"extract.dataset": spec["dataset"], "extract.models": (spec["model"],)}
    )


def resample_cache(src: Path, dst_root: Path, n: int, seed: int, layers: list[int]) -> Path:
    """A cache of ``n`` rows of ``src``'s ``layers`` (rows drawn seeded, with replacement past its size).

    Only the selected layers are written, renumbered ``0..k-1`` (the fit reads nothing else, and all
    L+1 layers at 4N would be gigabytes of disk for no measurement).
    """
    cache = FeatureCache(src)
    rows = np.sort(np.random.default_rng(seed).choice(cache.n, size=n, replace=n > cache.n))
    meta = cache.meta
    key = FeatureKey(**{f.name: meta[f.name] for f in fields(FeatureKey)})
    key = FeatureKey(**{**asdict(key), "split": f"{key.split}-n{n}"})
    final = dst_root / key.relpath()
    chunk = 4096
    with CacheWriter(final, key, n=n, chunk_size=chunk) as w:
        for i in w.missing_chunks():
            part = rows[i * chunk : (i + 1) * chunk]
            feats = np.stack([cache.layer(layer)[part] for layer in layers])  # (k, n_i, H)
            w.write_chunk(i, np.arange(i * chunk, i * chunk + len(part)), feats)
        w.finalize(
            cache.labels()[rows],
            {"label_names": cache.label_names, "texts_sha256": f"{cache.texts_sha256}-resampled-{n}-{seed}"},
        )
    return final


def _job(job: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process and return its figures."""
    from lightning_modules.callbacks import peak_rss_mb
    from lightning_modules.datamodule import Selection
    from lightning_modules.fit import fit_units, sweep_layers
    from lightning_modules.folds import Unit
    from lightning_modules.layers import parse_layer_spec

    cfg = _config(spec)
    train, test = Path(spec["train"]), Path(spec["test"])
    # CPU seconds beside wall seconds: with other jobs on the cores, wall time depends on them, CPU time much less.
    if job == "sweep":
        start, cpu = time.perf_counter(), time.process_time()
        scores = sweep_layers(train, test, cfg)
        return {
            "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "peak_rss_mb": peak_rss_mb(),
            "scores": [s.to_json() for s in scores],  # arrays as lists
        }
    if job == "sequential":
        single = with_values(cfg, {"train.fusion": "concat"})
        start, cpu, results = time.perf_counter(), time.process_time(), []
        for layer in range(FeatureCache(train).num_layers + 1):
            r = fit_units(single, [Selection(spec["model"], parse_layer_spec(layer), train, test)], [Unit(0, 0)])[0]
            results.append({"layer": layer, **r.asdict()})
            log.info("layer %d: val %.4f test %.4f, %d epochs, %.1f s", layer, r.val_acc, r.test_acc, r.epochs, r.fit_s)
        return {
            "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "peak_rss_mb": peak_rss_mb(),
            "results": results,
        }
    if job == "fit":
        r = fit_units(cfg, [Selection(spec["model"], spec["layer"], train, test)], [Unit(0, 0)])[0]
        return {"peak_rss_mb": r.peak_rss_mb, "fit_s": r.fit_s, "feature_bytes": r.feature_bytes, "epochs": r.epochs}
    raise ValueError(f"unknown job {job!r}")


def _child(job: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter and return its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, result = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_file.write_text(json.dumps(spec))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmark.bench.train",
                "--child",
                job,
                "--spec",
                str(spec_file),
                "--result",
                str(result),
            ],
            check=True,
        )
        return dict(json.loads(result.read_text()))


def _markdown(
    sweep: dict[str, Any], seq: dict[str, Any], rss: list[dict[str, Any]], command: str, notes: Sequence[str] = ()
) -> str:
    out = [f"Command: `{command}`", "", *notes, ""]
    if sweep and seq:
        out += [
            "| layer | sweep val acc | fits val acc | sweep test acc | fits test acc | abs diff test (points) | "
            "epochs (sweep / fit) |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        diffs = []
        for s, r in zip(sweep["scores"], seq["results"], strict=True):
            diffs.append(abs(s["test_acc"] - r["test_acc"]) * 100)
            out.append(
                f"| {s['layer']} | {s['val_acc']:.4f} | {r['val_acc']:.4f} | {s['test_acc']:.4f} | "
                f"{r['test_acc']:.4f} | {diffs[-1]:.2f} | "
                f"{s['epochs']} / {r['epochs']} |"
            )
        fit_total = sum(r["fit_s"] for r in seq["results"])
        out += [
            "",
            "| measure | value |",
            "|---|---:|",
            f"| layers / layer-epochs trained (sweep / fits) | {len(diffs)} / "
            f"{sum(x['epochs'] for x in sweep['scores'])} / "
            f"{sum(r['epochs'] for r in seq['results'])} |",
            f"| batched sweep, wall s / CPU s | {sweep['wall_s']:.1f} / {sweep['cpu_s']:.1f} |",
            f"| L+1 sequential single fits, wall s / CPU s | {seq['wall_s']:.1f} / {seq['cpu_s']:.1f} |",
            f"| of which trainer.fit s | {fit_total:.1f} |",
            f"| speed-up (wall) | {seq['wall_s'] / sweep['wall_s']:.1f}x |",
            f"| speed-up (CPU time) | {seq['cpu_s'] / sweep['cpu_s']:.1f}x |",
            f"| speed-up vs trainer.fit time only | {fit_total / sweep['wall_s']:.1f}x |",
            f"| max / mean abs test-acc diff, points | {max(diffs):.2f} / {np.mean(diffs):.3f} |",
            f"| best layer by val (sweep / fits) | {_best(sweep['scores'])} / {_best(seq['results'])} |",
            f"| peak RSS sweep / sequential, MiB | {sweep['peak_rss_mb']:.0f} / {seq['peak_rss_mb']:.0f} |",
            "",
        ]
    if rss:
        out += [
            "| fit of layer spec | train rows | test rows | peak RSS MiB | feature bytes read | selected train "
            "layers on disk, MiB | epochs | fit s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rss:
            out.append(
                f"| `{r['layer']}` | {r['n']} | {r['test_n']} | {r['peak_rss_mb']:.0f} | {r['feature_bytes']:,} | "
                f"{r['layer_mib']:.0f} | "
                f"{r['epochs']} | {r['fit_s']:.1f} |"
            )
    return "\n".join(out) + "\n"


def _best(rows: list[dict[str, Any]]) -> int:
    return int(max(rows, key=lambda r: r["val_acc"])["layer"])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="r8")
    parser.add_argument(
        "-s", "--set", dest="sets", action="append", default=[], help="config override a.b=v (repeatable)"
    )
    parser.add_argument("--skip", choices=("sweep", "rss"), action="append", default=[], help="leave a part out")
    parser.add_argument("--rss-n", type=int, default=20000, help="N of the peak-RSS fits (4N is run too)")
    parser.add_argument("--rss-layer", default="mean:last8", help="layer spec of the peak-RSS fits")
    parser.add_argument(
        "--rss-epochs", type=int, default=2, help="epochs of the peak-RSS fits (one pass reads every row)"
    )
    parser.add_argument("--threads", type=int, help="train.threads of every measurement (default: the config's, 1)")
    parser.add_argument("--out", default="reports/speed_train", help="output path without suffix")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _rss_fits(args: argparse.Namespace, spec: dict[str, Any], cache: FeatureCache, tmp: Path) -> list[dict[str, Any]]:
    """Peak RSS of one single-unit fit at N and 4N resampled training rows (N/2 and 2N test rows)."""
    from lightning_modules.layers import LayerSpec, parse_layer_spec

    rss_spec = parse_layer_spec(args.rss_layer)
    layers = list(rss_spec.resolve(cache.num_layers))
    renumbered = str(LayerSpec(tuple(range(len(layers))), rss_spec.agg))  # the resampled cache holds only these
    rss = []
    for n in (args.rss_n, 4 * args.rss_n):
        train = resample_cache(Path(spec["train"]), tmp, n, 0, layers)
        test = resample_cache(Path(spec["test"]), tmp, max(1, n // 2), 1, layers)
        sets = [*spec["sets"], f"train.max_epochs={args.rss_epochs}", "train.patience=0"]
        r = _child("fit", {**spec, "sets": sets, "train": str(train), "test": str(test), "layer": renumbered})
        layer_mib = n * len(layers) * cache.hidden_size * 2 / 2**20
        rss.append({"layer": args.rss_layer, "n": n, "test_n": max(1, n // 2), "layer_mib": layer_mib, **r})
        log.info("fit at N=%d: peak RSS %.0f MiB", n, r["peak_rss_mb"])
    return rss


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child:
        Path(args.result).write_text(json.dumps(_job(args.child, json.loads(Path(args.spec).read_text()))))
        return 0

    from lightning_modules.datamodule import resolve_selection

    # Fits and the sweep set their own torch threads from train.threads, so that is where --threads goes.
    sets = [*args.sets, *([f"train.threads={args.threads}"] if args.threads is not None else [])]
    spec: dict[str, Any] = {"model": args.model, "dataset": args.dataset, "sets": sets}
    load_before = os.getloadavg()
    cfg = _config(spec)
    sel = resolve_selection(cfg, args.model, -1)
    cache = FeatureCache(sel.train_dir)  # CacheError with the path when not extracted yet
    spec |= {"train": str(sel.train_dir), "test": str(sel.test_dir)}
    log.info(
        "%s on %s: %d train rows, %d layers of width %d",
        args.model,
        args.dataset,
        cache.n,
        cache.num_layers + 1,
        cache.hidden_size,
    )
    sweep = seq = {}
    if "sweep" not in args.skip:
        sweep = _child("sweep", spec)
        log.info("sweep: %.1f s", sweep["wall_s"])
        seq = _child("sequential", spec)
        log.info("sequential: %.1f s", seq["wall_s"])
    rss = []
    if "rss" not in args.skip:
        with tempfile.TemporaryDirectory(dir=Path(cfg.paths.cache_dir).parent) as tmp:
            rss = _rss_fits(args, spec, cache, Path(tmp))
    command = "python -m benchmark.bench.train " + " ".join(argv if argv is not None else sys.argv[1:])
    load = (
        f"load average before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} (2 cores); "
        f"train.threads: {cfg.train.threads}"
    )
    md = _markdown(sweep, seq, rss, command, [load])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"spec": spec, "sweep": sweep, "sequential": seq, "rss": rss}, indent=1)
    )
    out.with_suffix(".md").write_text(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
