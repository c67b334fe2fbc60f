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
from collections.abc import Sequence
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
    feature_bytes = _bytes_read(plan)
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


def _bytes_read(plan: UnitsPlan) -> int:
    """Bytes read from feature files by every data module of the plan (each counted once)."""
    counters = {id(c): c for dm in plan.dms for c in [dm.datasets["train"].sources[0].counter]}
    return sum(c.total for c in counters.values())


def sweep_layers(
    train_dir: str | Path,
    test_dir: str | Path,
    cfg: BenchConfig,
    layers: Sequence[int] | None = None,
    val_dir: str | Path | None = None,
) -> list[LayerScore]:
    """One head per layer of a model's cache, scored at its best validation epoch: the first unit of ``sweep_units``."""
    return sweep_units(train_dir, test_dir, cfg, 1, layers, val_dir)[0]


def sweep_units(
    train_dir: str | Path,
    test_dir: str | Path,
    cfg: BenchConfig,
    seeds: int = 1,
    layers: Sequence[int] | None = None,
    val_dir: str | Path | None = None,
) -> list[list[LayerScore]]:
    """Train one head per (unit, layer) of a model's cache at once; score each at its best validation epoch.

    A unit is a (fold, seed) of ``data.cv_folds`` folds (or the single split) and ``seeds`` seeds
    (``train.seed + k``), index ``u = fold * seeds + seed``. Each head is the single-layer ``concat`` head a fit of
    that layer trains (no projection: ``train.fusion`` and ``train.proj_dim`` are not read), bit-equal to it.

    Args:
        train_dir: The model's train cache.
        test_dir: Its test cache (only scored, never used for a choice).
        cfg: ``train`` and ``data`` settings.
        seeds: Seeds per fold.
        layers: Layer indices (negative allowed); default all ``0..L``.
        val_dir: The dataset's own validation cache, if any.

    Returns:
        Per unit, one ``LayerScore`` per layer (absolute index), in the order given.
    """
    with torch_threads(cfg.train.threads):
        train, test = Path(train_dir), Path(test_dir)
        return _sweep_units(train, test, cfg, seeds, layers, None if val_dir is None else Path(val_dir))


def _sweep_units(
    train_dir: Path, test_dir: Path, cfg: BenchConfig, seeds: int, layers: Sequence[int] | None, val_dir: Path | None
) -> list[list[LayerScore]]:
    num_layers = FeatureCache(train_dir).num_layers
    layers = list(range(num_layers + 1)) if layers is None else [LayerSpec((i,)).resolve(num_layers)[0] for i in layers]
    selections = [Selection(f"layer {i}", parse_layer_spec(i), train_dir, test_dir, val_dir) for i in layers]
    unit_list = units(cfg.data.cv_folds, seeds)
    dms = _fold_dms(selections, cfg, [u.fold for u in unit_list])
    dm0 = dms[0]
    train = dataclasses.replace(cfg.train, fusion="concat")
    heads, nets = [], []
    for u, unit in enumerate(unit_list):  # unit-major: head u * len(layers) + l
        for li in range(len(layers)):
            heads.append(Head(u, (li,)))
            nets.append(build_net([dm0.input_dims[li]], dm0.num_classes, train, cfg.train.seed + unit.seed))
    plan = UnitsPlan([dms[u.fold] for u in unit_list], [cfg.train.seed + u.seed for u in unit_list], heads, nets)
    module, _ = _trained(cfg, plan, True, None, None, False)
    tests: dict[int, tuple[float, float]] = {}
    for stack in module.stacks:  # every head's best weights, scored on test in one stacked pass per stack
        stack.load(stack.final_states(restore_best=True))
        _, acc, f1, _ = stack.evaluate("test")
        tests |= dict(zip(stack.members, zip(acc.tolist(), f1.tolist(), strict=True), strict=True))
    feature_bytes = _bytes_read(plan)
    out: list[list[LayerScore]] = []
    for u in range(len(unit_list)):
        row = []
        for li, layer in enumerate(layers):
            i = u * len(layers) + li
            stack, pos = _stack_of(module, i)
            track = stack.tracks[pos]
            row.append(
                LayerScore(
                    *track.val,
                    *tests[i],
                    track.best_epoch,
                    track.epochs,
                    layer=layer,
                    feature_bytes=feature_bytes,
                    val_pred=_val_pred(track.val_pred),
                    val_rows=unit_val_rows(plan.dms[u]),
                    curves=stack.curves[pos],
                )
            )
        out.append(row)
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
