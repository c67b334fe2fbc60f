"""What every path trains through the one engine (``lightning_modules.engine``): units, sweeps and refits.

- ``fit_units``: a configuration on each unit (fold, seed): a study trial of any preset, ``layerfuse fit``.
- ``sweep_units`` / ``sweep_layers``: one single-layer ``concat`` head per (unit, layer) of a model's cache.
- ``fit_all_rows``: a configuration on every training row for a fixed number of epochs, per seed: the refit
  whose heads a study reports and an exported model ships.

Each unit's head starts from the weights its own single fit would have (``seed_everything(seed)``, then
``FusionNet``), trains on its fold's rows in its seed's order, and keeps its best validation epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as L
import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from benchmark.core.cache import FeatureCache
from lightning_modules.callbacks import peak_rss_mb, time_inference, torch_threads
from lightning_modules.components.net import FusionNet
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.engine import Report, UnitsClassifier, UnitsPlan, train_units, unit_val_rows
from lightning_modules.folds import Unit, units
from lightning_modules.layers import LayerSpec, parse_layer_spec
from lightning_modules.probe import ProbeScores, probe_candidates
from lightning_modules.scores import AllRowsFit, FitResult, LayerScore
from lightning_modules.stack import UnitStack
from lightning_modules.unit_rows import Head

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from benchmark.core.config import BenchConfig
    from benchmark.core.config_sections import TrainConfig

log = logging.getLogger(__name__)


def build_net(input_dims: Sequence[int], num_classes: int, train: TrainConfig, seed: int) -> FusionNet:
    """A head's initial ``FusionNet``: as a single fit builds it (global seed first: projections use it)."""
    L.seed_everything(seed, workers=True, verbose=False)
    return FusionNet(
        input_dims, num_classes, train.fusion, train.proj_dim, train.hidden_dims, train.dropout, train.moe_experts, seed
    )


def net_kwargs(input_dims: Sequence[int], num_classes: int, train: TrainConfig, seed: int) -> dict[str, object]:
    """``FusionNet`` keyword arguments (what an exported model rebuilds the head from)."""
    return {
        "input_dims": list(input_dims),
        "num_classes": num_classes,
        "fusion": train.fusion,
        "proj_dim": train.proj_dim,
        "hidden_dims": list(train.hidden_dims),
        "dropout": train.dropout,
        "moe_experts": train.moe_experts,
        "seed": seed,
    }


def check_fit(cfg: BenchConfig, selections: Sequence[Selection]) -> None:
    """Raise what ``fit_units`` would raise for bad input, without training (layers, rows, fusion, widths).

    Raises:
        CacheError: missing or mismatching caches, a layer out of range. FusionConfigError / UnknownNameError: bad
            fusion.
    """
    dm = CachedFeatureDataModule.from_config(selections, cfg)
    dm.setup()
    build_net(dm.input_dims, dm.num_classes, cfg.train, cfg.train.seed)


def _fold_dms(
    selections: Sequence[Selection], cfg: BenchConfig, folds: Sequence[int]
) -> dict[int, CachedFeatureDataModule]:
    dms = {f: CachedFeatureDataModule.from_config(selections, cfg, f) for f in dict.fromkeys(folds)}
    for dm in dms.values():
        dm.setup()
    return dms


def probe_selections(cfg: BenchConfig, selections: Sequence[Selection]) -> ProbeScores:
    """The ridge probe (``lightning_modules.probe``) of each selection on every fold of ``cfg.data``, out of fold."""
    with torch_threads(cfg.train.threads):
        dms = _fold_dms(selections, cfg, list(range(max(cfg.data.cv_folds, 1))))
        return probe_candidates(list(dms.values()), range(len(selections)))


def _trained(
    cfg: BenchConfig, plan: UnitsPlan, validate: bool, report: Report | None, logger: Logger | None, curves: bool
) -> tuple[UnitsClassifier, float]:
    module = UnitsClassifier(plan, cfg.train, validate, report, unit_curves=curves)
    return train_units(cfg, module, logger)


def fit_units(
    cfg: BenchConfig,
    selections: Sequence[Selection],
    unit_list: Sequence[Unit],
    report: Report | None = None,
    logger: Logger | None = None,
) -> list[FitResult]:
    """Train and score ``selections`` on every unit at once; one ``FitResult`` per unit, in the order given.

    Args:
        cfg: ``train`` and ``data`` settings; unit ``(fold, seed)`` trains with seed ``train.seed + seed``.
        selections: The classifier's inputs.
        unit_list: The units (``lightning_modules.folds.units``).
        report: Receives ``(epoch, val/acc)`` of the first unit after each epoch (a pruning hook; may raise).
        logger: Where learning curves go (``engine.run_logger``), or None.

    Raises:
        CacheError: missing or mismatching caches. FusionConfigError / UnknownNameError: bad fusion.
    """
    with torch_threads(cfg.train.threads):
        dms = _fold_dms(selections, cfg, [u.fold for u in unit_list])
        dm0 = dms[unit_list[0].fold]
        seeds = [cfg.train.seed + u.seed for u in unit_list]
        k = tuple(range(len(selections)))
        plan = UnitsPlan(
            [dms[u.fold] for u in unit_list],
            seeds,
            [Head(i, k) for i in range(len(unit_list))],
            [build_net(dm0.input_dims, dm0.num_classes, cfg.train, s) for s in seeds],
        )
        module, fit_s = _trained(cfg, plan, True, report, logger, True)
        return [_unit_result(module, plan, i, fit_s / len(unit_list)) for i in range(len(unit_list))]


def _stack_of(module: UnitsClassifier, head: int) -> tuple[UnitStack, int]:
    """The stack holding plan head ``head`` and its position there."""
    for stack in module.stacks:
        if head in stack.members:
            return stack, stack.members.index(head)
    raise IndexError(head)


def _unit_result(module: UnitsClassifier, plan: UnitsPlan, i: int, fit_s: float) -> FitResult:
    """Load head ``i``'s best weights into its own net and score test as a single fit does."""
    stack, pos = _stack_of(module, i)
    track, net, dm = stack.tracks[pos], plan.nets[i], plan.dms[plan.heads[i].unit]
    stack.write_back(net, [t.cpu() for t in track.state])
    feature_bytes = _bytes_read(plan.dms)
    head_ms, test_pred = time_inference(net, dm.test_dataloader())
    y = torch.from_numpy(dm.datasets["test"].labels)
    c = dm.num_classes
    return FitResult(
        *track.val,
        test_acc=float(multiclass_accuracy(test_pred, y, c, average="micro")),
        test_f1=float(multiclass_f1_score(test_pred, y, c, average="macro")),
        best_epoch=track.best_epoch,
        epochs=track.epochs,
        params=sum(p.numel() for p in net.parameters() if p.requires_grad),
        fit_s=fit_s,
        head_ms_per_sample=head_ms,
        fused_dim=net.fused_dim,
        feature_bytes=feature_bytes,
        peak_rss_mb=peak_rss_mb(),
        test_pred=test_pred.numpy(),
        val_pred=_val_pred(track.val_pred),
        val_rows=unit_val_rows(dm),
        curves=stack.curves[pos],
    )


def _val_pred(pred: torch.Tensor | None) -> np.ndarray:
    return np.empty(0, np.int64) if pred is None else pred.numpy().astype(np.int64)


def _bytes_read(dms: Sequence[CachedFeatureDataModule]) -> int:
    """Bytes read from feature files by the data modules (each counted once)."""
    return sum({id(dm.counter): dm.counter.total for dm in dms}.values())


@dataclass(frozen=True)
class Screen:
    """How a sweep drops candidates early (``studies.trials.racing`` holds the rules; None: every head trains).

    Attributes:
        keep: ``(probe correctness (candidates, rows), each candidate's layer) -> positions kept``, before training.
        drop: ``{layer: its heads on the units so far} -> layers dropped``, after each round of folds.
        burn_in: Folds of the first round (the race decides after it, then after every further fold).
    """

    keep: Callable[[np.ndarray, list[int]], list[int]]
    drop: Callable[[dict[int, list[LayerScore]]], list[int]]
    burn_in: int


@dataclass(frozen=True)
class SweepProgress:
    """A sweep after its last finished round of folds: what an interrupted sweep resumes from.

    Attributes:
        rounds: Rounds finished.
        probe_acc: Each layer's probe accuracy (NaN unscreened).
        alive: Positions of the layers still training.
        screened: Per position, why it stopped ("" while it trains).
        heads: ``(unit, position) -> score`` of every head trained so far.
        feature_bytes: Bytes read from feature files so far, over every sitting.
    """

    rounds: int
    probe_acc: list[float]
    alive: list[int]
    screened: list[str]
    heads: dict[tuple[int, int], LayerScore]
    feature_bytes: int = 0


@dataclass(frozen=True)
class RoundLog:
    """Where a sweep keeps its progress after each round (``studies.trials.sweep_store``).

    ``load`` gives the last saved one (None: start afresh), ``save`` replaces it. A round costs minutes to hours on a
    CPU, so an interrupted raced sweep of a deep model loses at most the round it was in.
    """

    load: Callable[[], SweepProgress | None]
    save: Callable[[SweepProgress], None]


def sweep_layers(
    train_dir: str | Path,
    test_dir: str | Path,
    cfg: BenchConfig,
    layers: Sequence[int] | None = None,
    val_dir: str | Path | None = None,
) -> list[LayerScore]:
    """One head per layer of a model's cache, scored at its best validation epoch: the first unit of ``sweep_units``."""
    return sweep_units(train_dir, test_dir, cfg, 1, layers, val_dir)[0]


def sweep_units(  # noqa: PLR0913 - the sweep's caches, settings and its two optional parts
    train_dir: str | Path,
    test_dir: str | Path,
    cfg: BenchConfig,
    seeds: int = 1,
    layers: Sequence[int] | None = None,
    val_dir: str | Path | None = None,
    screen: Screen | None = None,
    rounds_log: RoundLog | None = None,
) -> list[list[LayerScore]]:
    """Train one head per (unit, layer) of a model's cache at once; score each at its best validation epoch.

    A unit is a (fold, seed) of ``data.cv_folds`` folds (or the single split) and ``seeds`` seeds
    (``train.seed + k``), index ``u = fold * seeds + seed``. Each head is the single-layer ``concat`` head a fit of
    that layer trains (no projection: ``train.fusion`` and ``train.proj_dim`` are not read), bit-equal to it.

    With a ``screen``, a ridge probe scores every layer on every fold first and only the layers it keeps train;
    they train in rounds of folds (``screen.burn_in`` folds, then one at a time) and the race drops layers between
    rounds. A head that did not train is a ``LayerScore`` with NaN scores, ``epochs`` 0 and the reason in
    ``screened``; every head carries its layer's probe accuracy. The heads that train are the ones the full sweep
    trains, bit-equal.

    Args:
        train_dir: The model's train cache.
        test_dir: Its test cache (only scored, never used for a choice).
        cfg: ``train`` and ``data`` settings.
        seeds: Seeds per fold.
        layers: Layer indices (negative allowed); default all ``0..L``.
        val_dir: The dataset's own validation cache, if any.
        screen: The probe and race (``studies.trials.racing.sweep_screen``), or None to train every head.
        rounds_log: Where progress is kept after each round, so that a rerun resumes after the last finished one.

    Returns:
        Per unit, one ``LayerScore`` per layer (absolute index), in the order given.
    """
    with torch_threads(cfg.train.threads):
        train, test = Path(train_dir), Path(test_dir)
        val = None if val_dir is None else Path(val_dir)
        return _sweep_units(train, test, cfg, seeds, layers, val, screen, rounds_log)


def _sweep_units(  # noqa: PLR0913 - sweep_units' arguments, resolved
    train_dir: Path,
    test_dir: Path,
    cfg: BenchConfig,
    seeds: int,
    layers: Sequence[int] | None,
    val_dir: Path | None,
    screen: Screen | None,
    rounds_log: RoundLog | None,
) -> list[list[LayerScore]]:
    num_layers = FeatureCache(train_dir).num_layers
    layers = list(range(num_layers + 1)) if layers is None else [LayerSpec((i,)).resolve(num_layers)[0] for i in layers]
    selections = [Selection(f"layer {i}", parse_layer_spec(i), train_dir, test_dir, val_dir) for i in layers]
    unit_list = units(cfg.data.cv_folds, seeds)
    dms = _fold_dms(selections, cfg, [u.fold for u in unit_list])
    folds = list(dms)
    state = rounds_log.load() if rounds_log is not None else None
    if state is None:
        state = _probed(screen, dms, layers)
    else:
        log.info("resuming the sweep of %s after round %d of its folds", train_dir, state.rounds)
    read_before = state.feature_bytes
    rounds = [folds] if screen is None else [folds[: screen.burn_in], *([f] for f in folds[screen.burn_in :])]
    for r, round_folds in enumerate(rnd for rnd in rounds if rnd):
        if r < state.rounds:
            continue
        state = _race_round(cfg, dms, unit_list, layers, screen, state, round_folds, round_folds[-1] == folds[-1])
        state = dataclasses.replace(state, feature_bytes=read_before + _bytes_read(list(dms.values())))
        if rounds_log is not None:
            rounds_log.save(state)
    return [
        [
            dataclasses.replace(
                state.heads.get((u, li)) or _untrained(layer, state.screened[li]),
                feature_bytes=state.feature_bytes,
                probe_acc=state.probe_acc[li],
                screened=state.screened[li],
            )
            for li, layer in enumerate(layers)
        ]
        for u in range(len(unit_list))
    ]


def _probed(screen: Screen | None, dms: dict[int, CachedFeatureDataModule], layers: list[int]) -> SweepProgress:
    """The sweep before any head trains: with a screen, the probe's scores and the layers it keeps."""
    everyone = list(range(len(layers)))
    if screen is None:
        return SweepProgress(0, [math.nan] * len(layers), everyone, [""] * len(layers), {})
    probed = probe_candidates(list(dms.values()), everyone)
    kept = sorted(screen.keep(probed.correct, layers))
    screened = ["" if li in kept else "probe" for li in everyone]
    return SweepProgress(0, probed.acc.tolist(), kept, screened, {})


def _race_round(  # noqa: PLR0913 - one round of a sweep: its settings, data, layers, rule and state
    cfg: BenchConfig,
    dms: dict[int, CachedFeatureDataModule],
    unit_list: Sequence[Unit],
    layers: list[int],
    screen: Screen | None,
    state: SweepProgress,
    round_folds: list[int],
    last: bool,
) -> SweepProgress:
    """Train the round's folds for every layer still in; unless it is the last round, the race drops the ones behind."""
    alive, screened = state.alive, list(state.screened)
    round_units = [u for u, unit in enumerate(unit_list) if unit.fold in round_folds]
    heads = state.heads | _train_heads(cfg, dms, unit_list, round_units, [(li, layers[li]) for li in alive])
    if screen is not None and not last:
        done = [u for u, unit in enumerate(unit_list) if unit.fold <= round_folds[-1]]
        dropped = set(screen.drop({layers[li]: [heads[u, li] for u in done] for li in alive}))
        for li in alive:
            if layers[li] in dropped:
                screened[li] = f"race: after fold {round_folds[-1]}"
        alive = [li for li in alive if layers[li] not in dropped]
    return dataclasses.replace(state, rounds=state.rounds + 1, alive=alive, screened=screened, heads=heads)


def _untrained(layer: int, reason: str) -> LayerScore:
    nan = math.nan
    return LayerScore(nan, nan, nan, nan, nan, -1, 0, layer=layer, screened=reason)


def _train_heads(
    cfg: BenchConfig,
    dms: dict[int, CachedFeatureDataModule],
    unit_list: Sequence[Unit],
    unit_ids: Sequence[int],
    layers: Sequence[tuple[int, int]],
) -> dict[tuple[int, int], LayerScore]:
    """Train the single-layer head of every (unit, layer) given at once; each scored at its best validation epoch.

    ``layers``: (position among the data modules' selections, layer index). Returns ``(unit, position) -> score``.
    """
    dm0 = dms[unit_list[unit_ids[0]].fold]
    train = dataclasses.replace(cfg.train, fusion="concat")
    heads, nets, keys = [], [], []
    for k, u in enumerate(unit_ids):  # unit-major
        for li, _ in layers:
            heads.append(Head(k, (li,)))
            nets.append(build_net([dm0.input_dims[li]], dm0.num_classes, train, cfg.train.seed + unit_list[u].seed))
            keys.append((u, li))
    plan_dms = [dms[unit_list[u].fold] for u in unit_ids]
    plan = UnitsPlan(plan_dms, [cfg.train.seed + unit_list[u].seed for u in unit_ids], heads, nets)
    module, _ = _trained(cfg, plan, True, None, None, False)
    tests: dict[int, tuple[float, float]] = {}
    for stack in module.stacks:  # every head's best weights, scored on test in one stacked pass per stack
        stack.load(stack.final_states(restore_best=True))
        _, acc, f1, _ = stack.evaluate("test")
        tests |= dict(zip(stack.members, zip(acc.tolist(), f1.tolist(), strict=True), strict=True))
    out = {}
    for i, (u, li) in enumerate(keys):
        stack, pos = _stack_of(module, i)
        track = stack.tracks[pos]
        out[u, li] = LayerScore(
            *track.val,
            *tests[i],
            track.best_epoch,
            track.epochs,
            layer=dict(layers)[li],
            val_pred=_val_pred(track.val_pred),
            val_rows=unit_val_rows(plan.dms[heads[i].unit]),
            curves=stack.curves[pos],
        )
    return out


def fit_all_rows(
    cfg: BenchConfig, selections: Sequence[Selection], epochs: int, seeds: int = 1, logger: Logger | None = None
) -> list[AllRowsFit]:
    """Fit ``cfg.train``'s head on all training rows of ``selections`` for ``epochs`` epochs per seed; score test.

    Seed k trains with ``train.seed + k``; all seeds train at once. A dataset's own validation split
    (``val_dir``) is not used: the refit trains on the train split only.

    Raises:
        CacheError: missing or mismatching caches.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: a refit trains at least one epoch")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=epochs))
    with torch_threads(cfg.train.threads):
        own = [dataclasses.replace(s, val_dir=None) for s in selections]
        dm = CachedFeatureDataModule(
            own,
            batch_size=cfg.train.batch_size,
            val_fraction=0.0,  # stratified_split holds out no row at fraction 0
            split_seed=cfg.data.split_seed,
            standardize=cfg.data.standardize,
            num_workers=cfg.data.num_workers,
            shuffle_seed=cfg.train.seed,
        )
        dm.setup()
        seed_list = [cfg.train.seed + k for k in range(seeds)]
        k = tuple(range(len(selections)))
        plan = UnitsPlan(
            [dm] * seeds,
            seed_list,
            [Head(i, k) for i in range(seeds)],
            [build_net(dm.input_dims, dm.num_classes, cfg.train, s) for s in seed_list],
        )
        module, fit_s = _trained(cfg, plan, False, None, logger, True)
        return [_all_rows_result(module, plan, i, fit_s / seeds, cfg.train) for i in range(seeds)]


def _all_rows_result(module: UnitsClassifier, plan: UnitsPlan, i: int, fit_s: float, train: TrainConfig) -> AllRowsFit:
    """Seed ``i``'s final weights in its own net, scored on test, with what an exported model needs."""
    stack, pos = _stack_of(module, i)
    net, dm = plan.nets[i], plan.dms[i]
    stack.write_back(net, [t.cpu() for t in stack.snapshot(stack.active.index(pos))])
    _, pred = time_inference(net, dm.test_dataloader())
    y = torch.from_numpy(dm.datasets["test"].labels)
    c = dm.num_classes
    sources = dm.datasets["train"].sources
    return AllRowsFit(
        test_acc=float(multiclass_accuracy(pred, y, c, average="micro")),
        test_f1=float(multiclass_f1_score(pred, y, c, average="macro")),
        test_pred=pred.numpy(),
        epochs=stack.tracks[pos].epochs or train.max_epochs,
        fit_s=fit_s,
        train_rows=len(dm.datasets["train"]),
        net=net_kwargs(dm.input_dims, c, train, plan.seeds[i]),
        state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        means=[s.mean for s in sources],
        stds=[s.std for s in sources],
        label_names=list(dm.label_names),
        curves=stack.curves[pos],
    )
