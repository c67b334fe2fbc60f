"""``fit_all_rows``: train a configuration's head on every training row for a fixed number of epochs, score test.

A study chooses a configuration and its epoch count on validation rows carved out of train; once chosen,
the head is trained again on all of train (no rows held out, no early stopping) for that many epochs. The
result carries everything an exported model needs to apply the head to new features: the ``FusionNet``
weights and hyper-parameters, each input's standardisation statistics (from all training rows, as the
fit used them) and the label names.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as L
import numpy as np
from torch import Tensor

from benchmark.core import tracking
from benchmark.core.config import with_values
from lightning_modules.callbacks import FitTimer, time_inference, torch_threads
from lightning_modules.components.net import net_state
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.module import FusionClassifier
from lightning_modules.train import make_trainer, quiet_lightning

if TYPE_CHECKING:
    from benchmark.core.config import BenchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AllRowsFit:
    """A head trained on all training rows, its test scores, and what applying it to new features needs.

    Attributes:
        test_acc, test_f1: Test scores.
        test_pred: Predicted test labels in test order.
        epochs: Epochs trained.
        fit_s: Wall seconds of ``trainer.fit``.
        train_rows: Training rows used (all of the train split).
        net: ``FusionNet`` keyword arguments (``input_dims``, ``num_classes``, fusion and head settings).
        state: ``FusionNet`` weights (CPU tensors).
        means, stds: Per input, the ``(H,)`` float32 standardisation statistics, or None when not standardised.
        label_names: Class names, label id order.
    """

    test_acc: float
    test_f1: float
    test_pred: np.ndarray
    epochs: int
    fit_s: float
    train_rows: int
    net: dict[str, Any]
    state: dict[str, Tensor] = dataclasses.field(repr=False)
    means: list[np.ndarray | None] = dataclasses.field(repr=False)
    stds: list[np.ndarray | None] = dataclasses.field(repr=False)
    label_names: list[str] = dataclasses.field(default_factory=list)


def fit_all_rows(cfg: BenchConfig, selections: Sequence[Selection], epochs: int) -> AllRowsFit:
    """Fit ``cfg.train``'s head on all training rows of ``selections`` for ``epochs`` epochs, then score test.

    Seeded with ``cfg.train.seed`` and deterministic like ``fit_and_evaluate``; a dataset's own validation
    split (``val_dir``) is not used: the refit trains on the train split only.

    Raises:
        CacheError: missing or mismatching caches.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: a refit trains at least one epoch")
    with torch_threads(cfg.train.threads):
        return _fit(with_values(cfg, {"train.max_epochs": epochs}), selections)


def _fit(cfg: BenchConfig, selections: Sequence[Selection]) -> AllRowsFit:
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
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
    model = FusionClassifier.from_config(dm.input_dims, dm.num_classes, cfg.train)
    timer = FitTimer()
    with quiet_lightning():
        trainer = make_trainer(cfg, [timer], validate=False)
        trainer.fit(model, datamodule=dm)
        test = trainer.test(model, datamodule=dm, verbose=False)[0]
    _, pred = time_inference(model, dm.test_dataloader())
    sources = dm.datasets["train"].sources
    t = cfg.train
    net = {
        "input_dims": list(dm.input_dims),
        "num_classes": dm.num_classes,
        "fusion": t.fusion,
        "proj_dim": t.proj_dim,
        "hidden_dims": list(t.hidden_dims),
        "dropout": t.dropout,
        "moe_experts": t.moe_experts,
        "seed": t.seed,
    }
    log.debug("refit %s: %d epochs, test acc %.4f", [s.name for s in selections], timer.epochs, test[tracking.TEST_ACC])
    return AllRowsFit(
        test_acc=float(test[tracking.TEST_ACC]),
        test_f1=float(test[tracking.TEST_F1]),
        test_pred=pred.numpy(),
        epochs=timer.epochs,
        fit_s=timer.fit_s,
        train_rows=len(dm.datasets["train"]),
        net=net,
        state={k: v.detach().cpu().clone() for k, v in net_state(model.state_dict()).items()},
        means=[s.mean for s in sources],
        stds=[s.std for s in sources],
        label_names=list(dm.label_names),
    )
