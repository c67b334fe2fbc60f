"""One command that proves the CUDA path on a GPU (no network; a few minutes on one modern GPU).

1. ``extract``: every model on MR (train and test) in bf16 on CUDA, through ``extract_all``.
2. ``agreement``: each layer of the first ``--compare-n`` train texts against a CPU fp32 extraction (max abs
   and cosine error per layer; fails when a layer's mean cosine is below 0.999).
3. ``oom_backoff``: the first model under a tiny ``torch.cuda.set_per_process_memory_fraction`` starts at the
   CUDA token budget, must back off, and must give the features of an unconstrained run.
4. ``sweep``: the batched all-layer sweep against one engine fit per layer on the GPU (speed-up; goal 10x).
5. ``search``: a ``search`` study of ``--trials`` trials on the GPU (every trial trained with
   ``train.accelerator``).
Both training checks fail unless every fit's parameters and features were on the accelerator's device.

Writes a JSON with every figure and the device, driver, torch and CUDA versions; exits 1 when a check fails.
``--device cpu --dry-run`` runs the same checks small on CPU (the memory limit is then emulated by raising
CUDA's out-of-memory error above a padded-token limit), which the test suite does so this script cannot rot.

    python -m benchmark.bench.gpu_check                                  # writes reports/gpu_check.json
    python -m benchmark.bench.gpu_check --device cpu --dry-run --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.config import BenchConfig, load_config, with_values

log = logging.getLogger("benchmark.bench.gpu_check")

MIN_COSINE = 0.999  # bf16 on CUDA vs fp32 on CPU, mean over texts, every layer
SWEEP_GOAL = 10.0  # batched sweep vs sequential fits, wall-clock speed-up
OOM_HEADROOM_MB = 128  # memory left beside the weights in the out-of-memory check: a few texts per batch fit


def _versions(device: str) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out |= {
            "name": props.name,
            "memory_gb": props.total_memory / 2**30,
            "capability": f"{props.major}.{props.minor}",
        }
        try:
            smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            out["driver"] = subprocess.run(smi, capture_output=True, text=True, check=True).stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            out["driver"] = "unknown (nvidia-smi not found)"
    return out


def _errors(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """Max abs error and mean / min cosine over texts of one layer's ``(n, H)`` features."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12)
    return {
        "max_abs": float(np.abs(got - want).max()),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }


def _encode(ex: Any, texts: list[str]) -> np.ndarray:
    """``(L+1, n, H)`` features of ``texts`` in their order (``encode_ids`` wants them longest first)."""
    ids = ex.tokenize(texts)
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    feats: np.ndarray = ex.encode_ids([ids[i] for i in order])[0]
    out = np.empty_like(feats)
    out[:, order] = feats
    return out


def check_extract(cfg: BenchConfig) -> dict[str, Any]:
    """Extract every model x split on the device; throughput and peak memory per cache."""
    from benchmark.core.cache import FeatureCache
    from extractors.run import extract_all

    rows = {}
    for s in extract_all(cfg):
        meta = FeatureCache(s.path).meta
        keep = ("n", "tokens", "extract_seconds", "tokens_per_s", "device", "dtype", "cuda_peak_mb", "peak_rss_mb")
        rows[f"{s.model} {s.split}"] = {k: meta[k] for k in keep if k in meta}
    return {"ok": True, "caches": rows}


def check_agreement(cfg: BenchConfig, n: int) -> dict[str, Any]:
    """Each layer of the device caches against a CPU fp32 extraction of the first ``n`` train texts."""
    from benchmark.core.cache import FeatureCache
    from benchmark.core.keys import load_text_split, resolve_features
    from extractors.hf import HFHiddenStateExtractor

    split = load_text_split(cfg, "train")
    out: dict[str, Any] = {"ok": True, "texts": min(n, len(split.texts)), "min_cosine": MIN_COSINE, "models": {}}
    for model in cfg.extract.models:
        rf = resolve_features(cfg, model, split)
        cache = FeatureCache(rf.path)
        ex = HFHiddenStateExtractor(rf.spec, "cpu", "fp32", rf.key.pooling, rf.key.max_length)
        want = _encode(ex, split.texts[:n])
        layers = [_errors(np.asarray(cache.layer(k)[:n]), want[k]) for k in range(cache.num_layers + 1)]
        worst = min(r["cosine_mean"] for r in layers)
        out["models"][model] = {"worst_layer_cosine_mean": worst, "layers": layers}
        out["ok"] = out["ok"] and worst >= MIN_COSINE
    return out


def _emulated_limit(ex: Any, max_tokens: int) -> None:
    """On CPU: raise CUDA's out-of-memory error for batches above ``max_tokens`` padded tokens, as a small GPU would."""
    import torch

    real = ex._forward

    def limited(ids: list[list[int]]) -> Any:
        if len(ids) * max(len(x) for x in ids) > max_tokens:
            raise torch.cuda.OutOfMemoryError(f"emulated: more than {max_tokens} padded tokens")
        return real(ids)

    ex._forward = limited


def check_oom_backoff(cfg: BenchConfig, device: str, n: int) -> dict[str, Any]:
    """The first model at the CUDA token budget under a tiny memory limit: it must back off and match."""
    import torch

    from benchmark.core.hardware import TOKEN_BUDGET, resolve_dtype
    from benchmark.core.keys import load_text_split, resolve_features
    from extractors.hf import HFHiddenStateExtractor

    split = load_text_split(cfg, "train")
    rf = resolve_features(cfg, cfg.extract.models[0], split)
    dtype = resolve_dtype(cfg.extract.dtype, device)
    start = TOKEN_BUDGET["cuda"]
    ex = HFHiddenStateExtractor(rf.spec, device, dtype, rf.key.pooling, rf.key.max_length, token_budget=start)
    texts = split.texts[:n]
    want = _encode(ex, texts)
    limit: dict[str, Any]
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        fraction = (torch.cuda.memory_allocated() + OOM_HEADROOM_MB * 2**20) / total
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(fraction)
        limit = {"mode": "set_per_process_memory_fraction", "fraction": fraction}
    else:
        padded = max(8, sum(len(x) for x in ex.tokenize(texts)) // 4)
        _emulated_limit(ex, padded)
        limit = {"mode": "emulated on CPU", "max_padded_tokens": padded}
    try:
        ex.token_budget = start
        got = _encode(ex, texts)
    finally:
        if device == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)
    errors = [_errors(got[k], want[k]) for k in range(len(got))]
    same = bool(np.array_equal(got, want))
    worst = min(e["cosine_min"] for e in errors)
    backed_off = ex.token_budget < start
    return {
        "ok": backed_off and worst >= 0.9999,
        "model": cfg.extract.models[0],
        "limit": limit,
        "token_budget": {"start": start, "after": ex.token_budget},
        "bit_identical": same,
        "worst_cosine_min": worst,
        "max_abs": max(e["max_abs"] for e in errors),
    }


def _trained_on(cfg: BenchConfig, seen: list[list[str]]) -> dict[str, Any]:
    """Whether every fit's tensors lived on the device ``train.accelerator`` names."""
    want = "cuda" if cfg.train.accelerator in ("gpu", "cuda") else "cpu"
    devices = sorted({d for fit in seen for d in fit})
    return {"fits": len(seen), "devices": devices, "on_device": bool(seen) and all(d.startswith(want) for d in devices)}


def check_sweep(cfg: BenchConfig, model: str) -> dict[str, Any]:
    """The batched all-layer sweep against one engine fit per layer, same config, on the device."""
    import torch

    from benchmark.core.cache import FeatureCache
    from lightning_modules.datamodule import Selection, resolve_selection
    from lightning_modules.engine import record_devices
    from lightning_modules.fit import fit_units, sweep_layers
    from lightning_modules.folds import Unit
    from lightning_modules.layers import parse_layer_spec

    sel = resolve_selection(cfg, model, -1)

    def timed(work: Callable[[], Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        result = work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    layers = range(FeatureCache(sel.train_dir).num_layers + 1)
    single = with_values(cfg, {"train.fusion": "concat"})
    with record_devices() as seen:
        sweep, sweep_s = timed(lambda: sweep_layers(sel.train_dir, sel.test_dir, cfg))
        fits, fits_s = timed(
            lambda: [
                fit_units(single, [Selection(model, parse_layer_spec(k), sel.train_dir, sel.test_dir)], [Unit(0, 0)])[0]
                for k in layers
            ]
        )
    diffs = [abs(s.test_acc - f.test_acc) for s, f in zip(sweep, fits, strict=True)]
    speedup = fits_s / sweep_s
    device = _trained_on(cfg, seen)
    return {
        "ok": len(sweep) == len(fits) == len(layers) and device["on_device"],
        "trained_on": device,
        "model": model,
        "layers": len(layers),
        "sweep_s": sweep_s,
        "sequential_s": fits_s,
        "speedup": speedup,
        "goal": SWEEP_GOAL,
        "goal_met": speedup >= SWEEP_GOAL,
        "max_abs_test_acc_diff": max(diffs),
        "best_layer_by_val": {
            "sweep": max(sweep, key=lambda s: s.val_acc).layer,
            "fits": int(np.argmax([f.val_acc for f in fits])),
        },
    }


def check_search(cfg: BenchConfig) -> dict[str, Any]:
    """A ``search`` study of ``cfg.study.trials`` trials over the extracted models."""
    from lightning_modules.engine import record_devices
    from studies.run.runner import run_study

    started = time.perf_counter()
    with record_devices() as seen:
        out = run_study(with_values(cfg, {"study.preset": "search", "study.workers": 1}))
    device = _trained_on(cfg, seen)
    return {
        "ok": out.failed == 0 and out.complete > 0 and device["on_device"],
        "trained_on": device,
        "trials": {"complete": out.complete, "pruned": out.pruned, "failed": out.failed},
        "best_val_acc": out.best_value,
        "best_test_acc": out.best_test_acc,
        "wall_s": time.perf_counter() - started,
    }


def _config(args: argparse.Namespace, work: Path) -> BenchConfig:
    small = {"extract.limit": 48, "study.trials": 2, "train.max_epochs": 2} if args.dry_run else {}
    values = {
        "extract.models": tuple(args.models.split(",")),
        "extract.dataset": args.dataset,
        "extract.splits": ("train", "test"),
        "extract.device": args.device,
        "extract.dtype": "bf16",
        "extract.show_progress": False,
        "paths.cache_dir": str(work / "cache"),
        "train.accelerator": "gpu" if args.device == "cuda" else "cpu",
        "train.max_epochs": args.max_epochs,
        "study.trials": args.trials,
        "study.name": "gpu-check-search",
        "study.storage": f"sqlite:///{work}/optuna.db",
        "tracking.uri": f"sqlite:///{work}/mlflow.db",
        "tracking.artifact_root": str(work / "artifacts"),
        **small,
    }
    return load_config(overrides=args.sets, **values)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every check in order; a check that raises is recorded as failed with its error, and the rest still run."""
    from benchmark.core.hardware import resolve_device

    device = resolve_device(args.device)
    cfg = _config(args, work)
    n = 24 if args.dry_run else args.compare_n
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "extract": lambda: check_extract(cfg),
        "agreement": lambda: check_agreement(cfg, n),
        "oom_backoff": lambda: check_oom_backoff(cfg, device, n),
        "sweep": lambda: check_sweep(cfg, args.sweep_model or cfg.extract.models[0]),
        "search": lambda: check_search(cfg),
    }
    report: dict[str, Any] = {"versions": _versions(device), "dry_run": args.dry_run, "checks": {}}
    started = time.perf_counter()
    for name, check in checks.items():
        t0 = time.perf_counter()
        try:
            result = check()
        except Exception as err:  # noqa: BLE001  # one broken check must not hide the figures of the others
            log.exception("check %s failed", name)
            result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        result["seconds"] = time.perf_counter() - t0
        report["checks"][name] = result
        log.info("%s: %s in %.1fs", name, "ok" if result["ok"] else "FAILED", result["seconds"])
    report["wall_s"] = time.perf_counter() - started
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring. Returns 0 when every check passed, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dry-run", action="store_true", help="the same checks, small (48 texts, 2 epochs, 2 trials)")
    parser.add_argument("--models", default="smollm2-135m,minilm-l6", help="comma list; the first is the OOM model")
    parser.add_argument("--sweep-model", help="model of the sweep check (default: the first)")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--compare-n", type=int, default=200, help="texts compared with CPU fp32")
    parser.add_argument("--max-epochs", type=int, default=20, help="train.max_epochs of the sweep, fits and study")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("-s", "--set", dest="sets", action="append", default=[], help="config override a.b=v")
    parser.add_argument("--work-dir", help="cache and stores (default: a temporary folder, removed after)")
    parser.add_argument("--out", default="reports/gpu_check.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        report = run(args, Path(args.work_dir or tmp))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for name, c in report["checks"].items():
        print(f"{name:12} {'ok' if c['ok'] else 'FAILED':7} {c['seconds']:7.1f}s  {c.get('error', '')}")
    failed = [name for name, c in report["checks"].items() if not c["ok"]]
    status = f"FAILED: {', '.join(failed)}" if failed else "every check passed"
    print(f"gpu check on {report['versions'].get('name', args.device)}: {status}; figures in {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
