"""``fit_config``: train and score one configuration (models at layer specs, a fusion, head settings) over seeds.

The plain, study-free path behind ``layerfuse fit``; reports print it as the command that reproduces a trial.
"""

from __future__ import annotations

from collections.abc import Mapping

from benchmark.core.config import BenchConfig, with_values
from lightning_modules.train import FitResult, fit_and_evaluate
from studies.caches import resolve_dirs


def fit_config(cfg: BenchConfig, layers: Mapping[str, str], seeds: int = 1) -> list[FitResult]:
    """Fit ``cfg.train`` on ``layers`` (model -> layer spec) of ``cfg.extract.dataset``, once per seed.

    Seed k trains with ``train.seed + k``, as study trials do, so a trial's numbers come back exactly.

    Raises:
        UserError: missing caches (with the extract command), bad layer specs or fusion.
    """
    cfg = with_values(cfg, {"extract.models": tuple(layers)})
    dirs = resolve_dirs(cfg)
    selections = [dirs[m].selection(m, spec) for m, spec in layers.items()]
    return [fit_and_evaluate(with_values(cfg, {"train.seed": cfg.train.seed + k}), selections) for k in range(seeds)]
