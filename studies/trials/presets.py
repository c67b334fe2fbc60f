"""``PRESETS``: the study types that mirror the paper's experiments, each a search space and a sampler.

Parameter names are stable across trials and a categorical's choices never vary (optuna#2564): a combination
that does not fit (a last-k larger than the model's layer count) is pruned with a logged reason instead.
Presets that fuse models at "their best layers" read those from the study's ``best_layers`` user attribute,
chosen on validation by the fast all-layer sweep before the first trial.

Listing presets (``layerfuse ls presets``, ``study --help``, a misspelt ``--preset``) imports this module: it
stays free of torch and Lightning, so the fusion registry and the baseline's grid are imported where used.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from benchmark.core.errors import UserError
from benchmark.core.registry import Registry
from lightning_modules.layers import AGGREGATIONS
from studies.run.sampling import TrialSeededSampler

log = logging.getLogger(__name__)

MAX_LAST_K = 10  # paper Sec. 3.1: the last 1..10 layers
HIDDEN_CHOICES = (128, 256, 512, 1024)
PROJ_CHOICES = (256, 1024)  # squares (16^2, 32^2) and multiples of 4: every fusion accepts them


@dataclass(frozen=True)
class StudyContext:
    """What a preset needs to plan trials: the models (config order) and their layer counts."""

    dataset: str
    models: tuple[str, ...]
    num_layers: dict[str, int]
    best_layers: dict[str, int] = field(default_factory=dict)
    fusions: tuple[str, ...] = ()  # the fusion choices (``study.fusions``; empty = every registered fusion)
    max_k: int = MAX_LAST_K  # largest k of last-k aggregations (``study.max_k``)

    @property
    def fusion_choices(self) -> list[str]:
        """Fusions the study may pick, fixed for the whole study (a categorical's choices never vary)."""
        from lightning_modules.fusion_index import fusion_names

        return list(self.fusions) or fusion_names()

    @property
    def k_choices(self) -> list[int]:
        """K = 1..max_k of the last-k preset."""
        return list(range(1, self.max_k + 1))


@dataclass(frozen=True)
class TrialPlan:
    """One trial's configuration: which models at which layer specs, fused how, with which head settings."""

    models: tuple[str, ...]
    layers: dict[str, str]
    fusion: str = "concat"
    train: dict[str, Any] = field(default_factory=dict)
    sweep_model: str | None = None  # layer-sweep: score every layer of this model at once
    baseline: dict[str, Any] | None = None  # tfidf-baseline: classifier and C (no cached features, no head)


@dataclass(frozen=True)
class Preset:
    """A study type.

    Attributes:
        name: Registry name.
        description: One line for ``layerfuse ls presets``.
        plan: Suggests a trial's params and returns its plan (may raise ``optuna.TrialPruned``).
        grid: The full grid for grid presets (None: sampled with TPE for ``study.trials`` trials).
        needs_best_layers: Whether plans read ``StudyContext.best_layers``.
        min_models: Fewest models the preset can use.
        needs_features: Whether trials read cached features (False: the lexical baseline reads the texts).
        prune_within: Params whose values group trials for the median pruner (``studies.run.pruning``): a grid cell is
            compared only with cells of its own pair or model, so a weak pair still finishes its best fusions.
        space: The ``study`` settings its search space reads (``fusions``, ``max_k``): only these enter its
            fingerprint, so a baseline or layer sweep resumes whatever fusions the next preset searches.
        space_version: Raised when the search space's parameters change (names, choices), so that a study
            sampled under the old space is not resumed under the new one (``studies.run.fingerprint``).
    """

    name: str
    description: str
    plan: Callable[[optuna.Trial, StudyContext], TrialPlan]
    grid: Callable[[StudyContext], dict[str, list[Any]]] | None = None
    needs_best_layers: bool = False
    min_models: int = 1
    needs_features: bool = True
    prune_within: tuple[str, ...] = ()
    space: tuple[str, ...] = ()
    space_version: int = 1

    def sampler(self, ctx: StudyContext, seed: int) -> optuna.samplers.BaseSampler:
        """Grid sampler over the preset's grid, or a multivariate TPE sampler seeded per trial (run.sampling)."""
        if self.grid is not None:
            # The seed orders the grid that grid ids index: every process must use the same one.
            return optuna.samplers.GridSampler(self.grid(ctx), seed=seed)
        return TrialSeededSampler(
            lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True, group=True, n_startup_trials=8), seed
        )

    def grid_size(self, ctx: StudyContext) -> int | None:
        """Number of grid points, or None for sampled presets."""
        if self.grid is None:
            return None
        size = 1
        for values in self.grid(ctx).values():
            size *= len(values)
        return size


PRESETS: Registry[Preset] = Registry("preset")
# Registered names, for the code (reports, benchmarks) that treats one preset specially.
LAYER_SWEEP, LAST_K, FUSION_METHODS, MULTI_MODEL, BASELINE, SEARCH = (
    "layer-sweep",
    "last-k",
    "fusion-methods",
    "multi-model",
    "tfidf-baseline",
    "search",
)


def _prune(trial: optuna.Trial, reason: str) -> None:
    log.info("trial %d pruned before training: %s", trial.number, reason)
    trial.set_user_attr("prune_reason", reason)
    raise optuna.TrialPruned(reason)


def _combos(models: tuple[str, ...], k: int) -> list[str]:
    return ["+".join(c) for c in itertools.combinations(models, k)]


def _plan_sweep(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    model = str(trial.suggest_categorical("model", list(ctx.models)))
    return TrialPlan((model,), {}, sweep_model=model)  # the layer param is logged once the sweep has chosen it


def _plan_last_k(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    model = str(trial.suggest_categorical("model", list(ctx.models)))
    agg = str(trial.suggest_categorical("agg", AGGREGATIONS.names()))
    k = int(trial.suggest_categorical("k", ctx.k_choices))
    if k > ctx.num_layers[model] + 1:
        _prune(trial, f"{model} has {ctx.num_layers[model] + 1} hidden states, fewer than k={k}")
    return TrialPlan((model,), {model: f"{agg}:last{k}"})


def _plan_fusion(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    pair = tuple(str(trial.suggest_categorical("pair", _combos(ctx.models, 2))).split("+"))
    fusion = str(trial.suggest_categorical("fusion", ctx.fusion_choices))
    return TrialPlan(pair, {m: str(ctx.best_layers[m]) for m in pair}, fusion)


def _plan_multi(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    subsets = [s for k in range(3, len(ctx.models) + 1) for s in _combos(ctx.models, k)]
    subset = tuple(str(trial.suggest_categorical("subset", subsets)).split("+"))
    return TrialPlan(subset, {m: str(ctx.best_layers[m]) for m in subset}, "concat")


def _subsets(models: tuple[str, ...]) -> list[str]:
    """Every non-empty subset of ``models``, smallest first, each in config order, joined by ``+``."""
    return [s for k in range(1, len(models) + 1) for s in _combos(models, k)]


def _plan_search(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    # One categorical over the non-empty subsets (fixed for the study) rather than a use.<alias> flag per model:
    # flags can all come out false, and such a trial trains nothing yet spends one of the study's trials.
    used = tuple(str(trial.suggest_categorical("subset", _subsets(ctx.models))).split("+"))
    layers = {}
    for model in used:
        top = ctx.num_layers[model]
        layer = trial.suggest_int(f"layer.{model}", 0, top)
        # With max_k = 1 there is nothing to aggregate: the only choice is the single layer.
        aggs = ["single", *(AGGREGATIONS.names() if ctx.max_k > 1 else [])]
        agg = str(trial.suggest_categorical(f"agg.{model}", aggs))
        if agg == "single":
            layers[model] = str(layer)
        else:
            # Aggregate the k layers ending at the chosen one (k=1 is the single layer again).
            k = trial.suggest_int(f"k.{model}", 2, ctx.max_k)
            layers[model] = f"{agg}:" + ",".join(str(i) for i in range(max(0, layer - k + 1), layer + 1))
    fusion = str(trial.suggest_categorical("fusion", ctx.fusion_choices))
    train = {
        "train.lr": trial.suggest_float("train.lr", 1e-5, 1e-2, log=True),
        "train.hidden_dims": (int(trial.suggest_categorical("train.hidden", list(HIDDEN_CHOICES))),),
        "train.dropout": trial.suggest_float("train.dropout", 0.0, 0.5),
        "train.weight_decay": trial.suggest_float("train.weight_decay", 1e-7, 1e-2, log=True),
        "train.proj_dim": int(trial.suggest_categorical("train.proj_dim", list(PROJ_CHOICES))),
    }
    return TrialPlan(used, layers, fusion, train)


# The lexical baseline's search space (the classifiers studies.trials.baseline fits and their C values).
CLASSIFIERS = ("svm", "logreg")
C_GRID = (0.1, 1.0, 10.0)


def _baseline_grid(ctx: StudyContext) -> dict[str, list[Any]]:
    return {"classifier": list(CLASSIFIERS), "C": list(C_GRID)}


def _plan_baseline(trial: optuna.Trial, ctx: StudyContext) -> TrialPlan:
    classifier = str(trial.suggest_categorical("classifier", list(CLASSIFIERS)))
    c = float(trial.suggest_categorical("C", list(C_GRID)))
    return TrialPlan((), {}, fusion="none", baseline={"classifier": classifier, "C": c})


PRESETS.add(
    LAYER_SWEEP,
    Preset(
        LAYER_SWEEP,
        "every single layer of each model (all layers of a model in one batched sweep)",
        _plan_sweep,
        grid=lambda c: {"model": list(c.models)},
    ),
)
PRESETS.add(
    LAST_K,
    Preset(
        LAST_K,
        "mean/max/min of the last k = 1..10 layers of each model (paper Fig. 3)",
        _plan_last_k,
        grid=lambda c: {"model": list(c.models), "agg": AGGREGATIONS.names(), "k": c.k_choices},
        prune_within=("model",),
        space=("max_k",),
    ),
)
PRESETS.add(
    FUSION_METHODS,
    Preset(
        FUSION_METHODS,
        "every fusion variant for each pair of models at their best layers",
        _plan_fusion,
        grid=lambda c: {"pair": _combos(c.models, 2), "fusion": c.fusion_choices},
        needs_best_layers=True,
        min_models=2,
        prune_within=("pair",),
        space=("fusions",),
    ),
)
PRESETS.add(
    MULTI_MODEL,
    Preset(
        MULTI_MODEL,
        "concatenation of every subset of >= 3 models at their best layers (Tables 5-6)",
        _plan_multi,
        grid=lambda c: {"subset": [s for k in range(3, len(c.models) + 1) for s in _combos(c.models, k)]},
        needs_best_layers=True,
        min_models=3,
    ),
)
PRESETS.add(
    BASELINE,
    Preset(
        BASELINE,
        "TF-IDF word 1-2 grams + linear SVM or logistic regression, C chosen on "
        "validation (no features needed; --models is ignored)",
        _plan_baseline,
        grid=_baseline_grid,
        min_models=0,
        needs_features=False,
    ),
)
PRESETS.add(
    SEARCH,
    Preset(
        SEARCH,
        "TPE over model subset, per-model layer/aggregation, fusion and head hyper-parameters",
        _plan_search,
        space=("fusions", "max_k"),
        space_version=2,  # 2: one `subset` categorical over the non-empty subsets (1: a use.<alias> flag per model)
    ),
)


def check_models(preset: Preset, models: tuple[str, ...]) -> None:
    """Raise a ``UserError`` when ``preset`` cannot run with ``models``."""
    if len(models) < preset.min_models:
        raise UserError(
            f"preset '{preset.name}' needs at least {preset.min_models} models, got {len(models)} "
            f"({', '.join(models) or 'none'}); pass more with --models a,b,c"
        )


def check_fusions(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` when every one is a valid fusion, else a ``UserError`` naming the bad one (with a suggestion)."""
    from lightning_modules.fusion_index import check_fusion

    for name in names:
        check_fusion(name, "study.fusions")
    return names
