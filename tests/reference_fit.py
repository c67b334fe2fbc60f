"""The reference single fit: one unit trained alone by a plain PyTorch loop, to prove the engine's units equal it.

Not product code: the engine (``lightning_modules.engine``) trains every head of the product. This loop is the
definition each of its heads must meet: ``seed_everything(seed)`` then ``FusionNet``, Adam, the fold's batches in
the seed's order (``CachedFeatureDataModule``), validation every epoch, early stopping on ``train.monitor`` after
``patience`` epochs without strict improvement, the best epoch's weights restored and scored on test.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as L
import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_f1_score

from benchmark.core.config import BenchConfig, with_values
from lightning_modules.callbacks import improved, monitor_mode
from lightning_modules.components.classifier import make_adam
from lightning_modules.components.net import FusionNet
from lightning_modules.datamodule import CachedFeatureDataModule, Selection


@dataclass
class ReferenceFit:
    """One unit's scores at its best epoch, its epochs, validation and test predictions, and its net."""

    val_acc: float
    val_f1: float
    val_loss: float
    test_acc: float
    best_epoch: int
    epochs: int
    val_pred: np.ndarray
    val_rows: np.ndarray
    test_pred: np.ndarray
    net: FusionNet
    val_losses: list[float]


@torch.no_grad()
def _evaluate(net: FusionNet, loader: object, c: int) -> tuple[float, float, float, np.ndarray]:
    net.eval()
    losses, preds, ys = [], [], []
    for xs, y in loader:  # type: ignore[attr-defined]
        logits = net(xs)
        losses.append(F.cross_entropy(logits, y) * len(y))
        preds.append(logits.argmax(-1))
        ys.append(y)
    net.train()
    pred, y = torch.cat(preds), torch.cat(ys)
    loss = float(torch.stack(losses).sum() / len(y))
    f1 = float(multiclass_f1_score(pred, y, c, average="macro"))
    return loss, float((pred == y).float().mean()), f1, pred.numpy()


def reference_fit(
    cfg: BenchConfig, selections: Sequence[Selection], fold: int = 0, seed_offset: int = 0
) -> ReferenceFit:
    """Train unit ``(fold, seed_offset)`` of ``cfg`` alone (one thread; see the module docstring)."""
    cfg = with_values(cfg, {"train.seed": cfg.train.seed + seed_offset})
    t, seed = cfg.train, cfg.train.seed
    dm = CachedFeatureDataModule.from_config(selections, cfg, fold)
    dm.setup()
    L.seed_everything(seed, workers=True, verbose=False)
    net = FusionNet(dm.input_dims, dm.num_classes, t.fusion, t.proj_dim, t.hidden_dims, t.dropout, t.moe_experts, seed)
    opt = make_adam(net.parameters(), t.lr, t.weight_decay)
    mode, best, best_epoch, wait, state = monitor_mode(t.monitor), None, -1, 0, None
    scores: tuple[float, float, float, np.ndarray] = (float("nan"), float("nan"), float("nan"), np.empty(0))
    val_losses: list[float] = []
    epochs = 0
    train = dm.train_dataloader()  # one sampler for the whole fit: each epoch draws its next permutation
    for epoch in range(t.max_epochs):
        net.train()
        for xs, y in train:
            loss = F.cross_entropy(net(xs), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs = epoch + 1
        got = _evaluate(net, dm.val_dataloader(), dm.num_classes)
        val_losses.append(got[0])
        current = got[0] if t.monitor == "val/loss" else got[1]
        if improved(current, best, mode):
            best, best_epoch, wait, scores, state = current, epoch, 0, got, copy.deepcopy(net.state_dict())
        else:
            wait += 1
            if t.patience and wait >= t.patience:
                break
    assert state is not None
    net.load_state_dict(state)
    _, test_acc, _, test_pred = _evaluate(net, dm.test_dataloader(), dm.num_classes)
    return ReferenceFit(
        val_acc=scores[1],
        val_f1=scores[2],
        val_loss=scores[0],
        test_acc=test_acc,
        best_epoch=best_epoch,
        epochs=epochs,
        val_pred=scores[3],
        val_rows=dm.datasets["val"].rows,
        test_pred=test_pred,
        net=net,
        val_losses=val_losses,
    )
