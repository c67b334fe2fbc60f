"""The training engine's speed on each path, for side-by-side runs against another checkout (a benchmark, never a test).

Times, on the same synthetic cached features (``tests/helpers_features``: 2,000 train and 500 test rows, a
384-wide and a 256-wide model of 6 layers), a 5-fold x 3-seed trial of a one-model ``concat`` head, a 5-fold x
3-seed trial of a two-model ``sum`` fusion, a 5-fold x 3-seed sweep of all 7 layers and a 3-seed refit: the best of
``--repeats`` runs each. Run it once per checkout, each run importing its own checkout's code:

    PYTHONPATH=OLD python -m benchmark.bench.engine_paths --repo OLD
    PYTHONPATH=NEW python -m benchmark.bench.engine_paths --repo NEW

A checkout from before the one engine (4c7d86f and earlier) trains trials with ``batched_fit``, sweeps with
``sweep`` and refits one seed at a time with ``refit``; the same calls are made there through those modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _engine(repo: Path) -> tuple[Any, Any, Callable[..., Any], bool]:
    """``fit_units``, ``sweep_units``, ``fit_all_rows`` of the checkout, and whether it is the one engine."""
    if (repo / "lightning_modules" / "fit.py").exists():
        fit = importlib.import_module("lightning_modules.fit")
        return fit.fit_units, fit.sweep_units, fit.fit_all_rows, True
    fit_units = importlib.import_module("lightning_modules.batched_fit").fit_units
    sweep_units = importlib.import_module("lightning_modules.sweep").sweep_units
    return fit_units, sweep_units, importlib.import_module("lightning_modules.refit").fit_all_rows, False


def _best(name: str, run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    print(f"| {name} | {best:.2f} |", flush=True)
    return best


def main(argv: list[str] | None = None) -> int:
    """Print one Markdown row per path: its name and best wall seconds."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the checkout whose code PYTHONPATH imports")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paths", default="trial,fusion,sweep,refit", help="which paths to time (comma list)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.repo / "tests"))
    make_model = importlib.import_module("helpers_features").make_model
    from benchmark.core.config import load_config, with_values
    from lightning_modules.folds import units

    fit_units, sweep_units, fit_all_rows, one_engine = _engine(args.repo)
    tmp = Path(tempfile.mkdtemp())
    a = make_model(tmp, "a", n_train=2000, n_test=500, hidden=384, num_layers=6, signal=0.6)
    b = make_model(tmp, "b", n_train=2000, n_test=500, hidden=256, num_layers=6, signal=0.6)
    sets = {"train.max_epochs": 15, "train.patience": 3, "train.lr": 1e-3, "data.cv_folds": 5, "train.proj_dim": 256}
    cfg = with_values(load_config(env={}), sets)
    summed = with_values(cfg, {"train.fusion": "sum"})
    pair = [a.select(-1), b.select(3)]
    if one_engine:
        refit: Callable[[], object] = lambda: fit_all_rows(cfg, [a.select(-1)], 10, 3)  # noqa: E731
    else:
        refit = lambda: [fit_all_rows(with_values(cfg, {"train.seed": k}), [a.select(-1)], 10) for k in range(3)]  # noqa: E731
    paths: dict[str, tuple[str, Callable[[], object]]] = {
        "trial": ("trial, concat, 5 folds x 3 seeds", lambda: fit_units(cfg, [a.select(-1)], units(5, 3))),
        "fusion": ("trial, sum of 2 models, 5 x 3", lambda: fit_units(summed, pair, units(5, 3))),
        "sweep": ("sweep, 7 layers, 5 x 3", lambda: sweep_units(a.train_dir, a.test_dir, cfg, 3)),
        "refit": ("refit, 3 seeds, 10 epochs", refit),
    }
    print("| path | best wall s |\n|---|---|")
    for key in args.paths.split(","):
        _best(*paths[key], args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
