"""Fast all-layer sweep: one MLP head per layer and unit (fold, seed), all trained at once with batched weights.

Each layer's head is the one ``fit_and_evaluate`` trains for a single layer with ``fusion=concat`` (no
projection): same initial weights (``MLPHead`` seeded by ``train.seed``), same batches
(``ShuffledBatchSampler`` with the same seed), same dropout masks, same Adam update (element-wise, so a
stacked parameter is the per-layer update), the same early-stopping rule per layer (strict improvement of
``train.monitor``, stop after ``patience`` epochs without) and best-epoch weights for the test score.

Where the time goes (BENCHMARKS.md): the batched matmuls and the Adam pass over the stacked weights; the
rest is kept off the step. Heads of one seed share one dropout generator's draws (``BatchedHeads``). The
rows of all layers are read once into a float16 block when it fits ``RESIDENT_BYTES`` (a batch is then an
in-memory gather, not 31 x B reads from disk), else streamed per batch (``UnitRows``). A head that stopped
leaves the stacked weights and its Adam moments, so it costs nothing afterwards. Cross-validation folds join
the layers: every (fold, seed, layer) head of a model trains in one batched model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_f1_score

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from lightning_modules.batched import BatchedHeads
from lightning_modules.callbacks import improved, monitor_mode, torch_threads
from lightning_modules.components.classifier import MLPHead, make_adam
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.features import ShuffledBatchSampler
from lightning_modules.folds import Unit, units
from lightning_modules.layers import LayerSpec, parse_layer_spec
from lightning_modules.scores import HeadScore
from lightning_modules.unit_rows import UnitRows

if TYPE_CHECKING:
    from benchmark.core.config import BenchConfig


@dataclass(frozen=True, slots=True)
class LayerScore(HeadScore):
    """One layer's head scores, as a separate fit of that layer would report them."""

    layer: int
    feature_bytes: int = 0  # bytes the whole sweep read from feature files (all its layers, all passes)
    val_pred: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0, np.int64))
    val_rows: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0, np.int64))


RESIDENT_BYTES = 1 << 30  # train + validation rows of all layers held in memory up to this size (MR, 31 x 576: 254 MB)


def sweep_device(accelerator: str) -> torch.device:
    """The device for ``train.accelerator``: CUDA for ``gpu``/``cuda``, and for ``auto`` when available."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class HeadTrack:
    """One layer's early stopping, as ``EarlyStopping`` + ``RestoreBest`` do it for a Lightning fit."""

    mode: str
    patience: int
    best: float | None = None
    best_epoch: int = -1
    epochs: int = 0
    wait: int = 0
    val: tuple[float, float, float] = (float("nan"),) * 3  # (acc, f1, loss) at the best epoch
    state: list[Tensor] = field(default_factory=list)

    def end_epoch(
        self, epoch: int, current: float, val: tuple[float, float, float], snapshot: Callable[[], list[Tensor]]
    ) -> bool:
        """Record an epoch's monitored value; return True when the layer stops training."""
        self.epochs = epoch + 1
        if improved(current, self.best, self.mode):
            self.best, self.best_epoch, self.wait, self.val, self.state = current, epoch, 0, val, snapshot()
            return False
        self.wait += 1
        return bool(self.patience) and self.wait >= self.patience


def still_training(
    tracks: Sequence[HeadTrack],
    epoch: int,
    monitor: str,
    val: tuple[Tensor, Tensor, Tensor],
    snapshot: Callable[[int], list[Tensor]],
) -> list[int]:
    """End an epoch for every head of a batched fit; return the positions of those that train on.

    Args:
        tracks: Each active head's tracker, in the batch's head order.
        epoch: The epoch that ended (0-based).
        monitor: ``train.monitor`` (validation loss or accuracy).
        val: Per-head validation (loss, acc, macro-F1), in the batch's head order.
        snapshot: Head position -> that head's weights now (called only when it improved).
    """
    v_loss, v_acc, v_f1 = val
    monitored = v_loss if monitor == tracking.VAL_LOSS else v_acc
    keep = []
    for i, track in enumerate(tracks):
        scores = (float(v_acc[i]), float(v_f1[i]), float(v_loss[i]))
        if not track.end_epoch(epoch, float(monitored[i]), scores, partial(snapshot, i)):
            keep.append(i)
    return keep


@torch.no_grad()
def _evaluate(heads: BatchedHeads, rows: UnitRows, batch_size: int, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-head (loss, acc, macro-F1) over ``rows`` in order, in batches of ``batch_size`` (as a fit validates)."""
    losses, preds, targets = [], [], []
    for start in range(0, len(rows), batch_size):
        x, y = rows.chunk(start, min(start + batch_size, len(rows)))  # (n, B, H), (n, B)
        logits = heads.forward(x, train=False)  # (n, B, C)
        # One mean-reduced cross-entropy per head, as the fit computes its batch loss: the same summation
        # (a batched mean over reduction="none" rounds differently and could break a tie in early stopping).
        ce = torch.stack([F.cross_entropy(lg, yi) for lg, yi in zip(logits, y, strict=True)])  # (n,)
        losses.append(ce * y.shape[1])
        preds.append(logits.argmax(dim=-1))
        targets.append(y)
    pred, y = torch.cat(preds, dim=1), torch.cat(targets, dim=1)  # (n, N), (n, N)
    loss = torch.stack(losses).sum(dim=0) / y.shape[1]
    acc = (pred == y).float().mean(dim=1)
    # samplewise over a (heads, N) input: one macro-F1 per head in one call
    f1 = multiclass_f1_score(pred, y, num_classes, average="macro", multidim_average="samplewise")
    return loss, acc, f1


@torch.no_grad()
def _predict(heads: BatchedHeads, rows: UnitRows, batch_size: int) -> Tensor:
    """Per-head predicted labels ``(n, N)`` of ``rows`` in order."""
    preds = [
        heads.forward(rows.chunk(s, min(s + batch_size, len(rows)))[0], train=False).argmax(dim=-1)
        for s in range(0, len(rows), batch_size)
    ]
    return torch.cat(preds, dim=1) if preds else torch.empty(0, dtype=torch.long)


def sweep_layers(
    train_dir: str | Path,
    test_dir: str | Path,
    cfg: BenchConfig,
    layers: Sequence[int] | None = None,
    val_dir: str | Path | None = None,
) -> list[LayerScore]:
    """Train one head per layer of a model's cache at once and score each at its best validation epoch.

    The first unit of ``sweep_units`` (fold 0, seed ``train.seed``); see there.

    Returns:
        One ``LayerScore`` per layer (absolute index), in the order given.
    """
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
    (``train.seed + k``), index ``u = fold * seeds + seed`` (``lightning_modules.folds.units``). Units whose folds
    hold equally many training rows train as one batched model (their batches have equal shapes at every step,
    so every head is its own fit's equal); k folds of N rows differ by at most one row, so at most two models.

    Args:
        train_dir: The model's train cache.
        test_dir: Its test cache (only scored, never used for a choice).
        cfg: ``train`` (seed, lr, weight_decay, batch_size, max_epochs, patience, monitor, hidden_dims,
            dropout) and ``data`` (val_fraction, split_seed, standardize, cv_folds) are read; ``train.fusion`` and
            ``train.proj_dim`` are not (the single-input ``concat`` head has no projection).
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
    dms = [CachedFeatureDataModule.from_config(selections, cfg, fold) for fold in range(max(cfg.data.cv_folds, 1))]
    for dm in dms:
        dm.setup()
    groups: dict[int, list[Unit]] = {}
    for unit in units(cfg.data.cv_folds, seeds):
        groups.setdefault(len(dms[unit.fold].datasets["train"]), []).append(unit)
    tracks: dict[Unit, list[HeadTrack]] = {}
    tests: dict[Unit, tuple[Tensor, Tensor, Tensor]] = {}
    read = 0
    for group in groups.values():
        got, test_scores, n_read = _train_group(group, dms, cfg, len(layers))
        tracks |= got
        tests |= test_scores
        read += n_read
    feature_bytes = read + sum(dm.feature_bytes for dm in dms)
    return [
        [
            LayerScore(
                *tr.val,
                float(tests[u][0][i]),
                float(tests[u][1][i]),
                tr.best_epoch,
                tr.epochs,
                layer=layer,
                feature_bytes=feature_bytes,
                val_pred=tests[u][2][i].numpy(),
                val_rows=dms[u.fold].datasets["val"].rows.copy(),
            )
            for i, (layer, tr) in enumerate(zip(layers, tracks[u], strict=True))
        ]
        for u in units(cfg.data.cv_folds, seeds)
    ]


def _train_group(
    group: list[Unit], dms: list[CachedFeatureDataModule], cfg: BenchConfig, n_layers: int
) -> tuple[dict[Unit, list[HeadTrack]], dict[Unit, tuple[Tensor, Tensor, Tensor]], int]:
    """Train ``group``'s heads (unit-major: head ``i * n_layers + l``); tracks, test (acc, f1, val pred), bytes read."""
    t = cfg.train
    dm0 = dms[group[0].fold]
    c, device = dm0.num_classes, sweep_device(t.accelerator)
    unit_of = [i for i in range(len(group)) for _ in range(n_layers)]
    layer_of = [li for _ in group for li in range(n_layers)]
    heads = BatchedHeads(
        [
            MLPHead(dm0.input_dims[li], t.hidden_dims, c, t.dropout, t.seed + group[u].seed)
            for u, li in zip(unit_of, layer_of, strict=True)
        ],
        device,
    )
    opt = make_adam(heads.parameters(), t.lr, t.weight_decay)
    split = {s: [dms[u.fold].datasets[s] for u in group] for s in ("train", "val", "test")}
    # The very batches fit_and_evaluate's DataLoader yields for each unit: its fold's rows, its seed's order.
    samplers = [
        ShuffledBatchSampler(len(ds), t.batch_size, True, t.seed + u.seed)
        for ds, u in zip(split["train"], group, strict=True)
    ]
    itemsize = split["train"][0].sources[0].files[0].dtype.itemsize
    cache_rows = split["train"][0].sources[0].files[0].shape[0]
    resident = n_layers * cache_rows * max(dm0.input_dims) * itemsize <= RESIDENT_BYTES
    train = UnitRows(split["train"], unit_of, layer_of, resident, device)
    val = UnitRows(split["val"], unit_of, layer_of, resident, device, share=train)
    read_before = train.counter.total
    tracks = [HeadTrack(monitor_mode(t.monitor), t.patience) for _ in unit_of]
    active = list(range(len(unit_of)))  # heads still training, in stacking order
    for epoch in range(t.max_epochs):
        for pos in zip(*samplers, strict=True):
            x, y = train.batch([np.asarray(p) for p in pos])  # (n, B, H), (n, B)
            logits = heads.forward(x, train=True)  # (n, B, C)
            n = logits.shape[0]
            # Sum of per-head mean losses: each head's gradient is that of its own loss.
            loss = F.cross_entropy(logits.reshape(-1, c), y.reshape(-1), reduction="none").view(n, -1).mean(dim=1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            opt.step()
        scores = _evaluate(heads, val, dm0.eval_batch_size, c)
        keep = still_training([tracks[hi] for hi in active], epoch, t.monitor, scores, heads.snapshot)
        if len(keep) < len(active):
            active = [active[i] for i in keep]
            if not active:
                break
            opt = heads.keep(keep, opt)
            train.keep(keep)
            val.keep(keep)
    read = train.counter.total - read_before
    del train, val  # free the resident block before the test pass
    heads.load([tr.state for tr in tracks])
    val_pred = _predict(heads, UnitRows(split["val"], unit_of, layer_of, False, device), dm0.eval_batch_size)
    test_rows = UnitRows(split["test"], unit_of, layer_of, False, device)
    before = test_rows.counter.total
    _, test_acc, test_f1 = _evaluate(heads, test_rows, dm0.eval_batch_size, c)
    read += test_rows.counter.total - before
    by_unit = {u: [tracks[i * n_layers + li] for li in range(n_layers)] for i, u in enumerate(group)}
    tests = {
        u: (
            test_acc[i * n_layers : (i + 1) * n_layers],
            test_f1[i * n_layers : (i + 1) * n_layers],
            val_pred[i * n_layers : (i + 1) * n_layers].cpu(),
        )
        for i, u in enumerate(group)
    }
    return by_unit, tests, read
