"""``fit_and_evaluate``: one seeded, deterministic Lightning fit of a ``FusionClassifier`` plus its test scores.

This is the function a study objective calls per trial: it takes the config and the selections, accepts
extra callbacks (an Optuna pruning callback on ``val/acc``) and a logger, and returns a ``FitResult``.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.callbacks import EarlyStopping

from benchmark.core import tracking
from lightning_modules.callbacks import FitTimer, RestoreBest, monitor_mode, peak_rss_mb, time_inference, torch_threads
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.module import FusionClassifier
from lightning_modules.scores import HeadScore

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from benchmark.core.config import BenchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FitResult(HeadScore):
    """Scores (at the best validation epoch) and costs of one fit.

    Attributes:
        params: Trainable parameters.
        fit_s: Wall seconds of ``trainer.fit``.
        head_ms_per_sample: Forward-pass milliseconds per test sample, features in memory, after warm-up.
        fused_dim: Width of the fused features fed to the head.
        feature_bytes: Bytes read from feature files by this fit (statistics, train, val and test passes).
        peak_rss_mb: Peak resident memory of the process so far (run one fit per process to attribute it).
        test_pred: Predicted test labels in test order (for paired tests between configurations).
        val_pred: Predicted labels of the validation rows at the best epoch, in ``val_rows`` order.
        val_rows: Those rows' indices into the train cache (into the validation cache when the dataset has one).
    """

    params: int
    fit_s: float
    head_ms_per_sample: float
    fused_dim: int
    feature_bytes: int
    peak_rss_mb: float
    test_pred: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=lambda: np.empty(0, np.int64))
    val_pred: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=lambda: np.empty(0, np.int64))
    val_rows: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=lambda: np.empty(0, np.int64))

    def metrics(self) -> dict[str, float]:
        """Flat ``split/metric`` and ``perf/*`` names for tracking."""
        return {
            tracking.VAL_ACC: self.val_acc,
            tracking.VAL_F1: self.val_f1,
            tracking.VAL_LOSS: self.val_loss,
            tracking.TEST_ACC: self.test_acc,
            tracking.TEST_F1: self.test_f1,
            tracking.PERF_BEST_EPOCH: self.best_epoch,
            tracking.PERF_EPOCHS: self.epochs,
            tracking.PERF_PARAM_COUNT: self.params,
            tracking.PERF_FIT_S: self.fit_s,
            tracking.PERF_HEAD_MS_PER_SAMPLE: self.head_ms_per_sample,
            tracking.PERF_FUSED_DIM: self.fused_dim,
            tracking.PERF_FEATURE_BYTES: self.feature_bytes,
            tracking.PERF_PEAK_RSS_MB: self.peak_rss_mb,
        }

    def asdict(self) -> dict[str, float | int]:
        """Field name -> value."""
        arrays = ("test_pred", "val_pred", "val_rows")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in arrays}


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit INFO banners and irrelevant warnings (one study runs hundreds of fits)."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Batches are cheap gathers from the cache: worker processes would only add start-up time.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*treespec.*")  # Lightning internals vs. newer torch
            yield
    finally:
        lightning_log.setLevel(level)


def make_trainer(
    cfg: BenchConfig, callbacks: Sequence[L.Callback] = (), logger: Logger | None = None, validate: bool = True
) -> L.Trainer:
    """A quiet, deterministic single-device trainer for ``cfg.train`` (no checkpoints, no progress bar).

    ``validate=False`` runs no validation loop (a refit on all training rows has no validation rows).
    """
    return L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=1,
        max_epochs=cfg.train.max_epochs,
        deterministic=True,
        callbacks=list(callbacks),
        logger=logger if logger is not None else False,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        limit_val_batches=None if validate else 0,
    )


def fit_and_evaluate(
    cfg: BenchConfig,
    selections: Sequence[Selection],
    callbacks: Sequence[L.Callback] = (),
    logger: Logger | None = None,
    fold: int = 0,
) -> FitResult:
    """Train on the selections' train part, early-stop on ``cfg.train.monitor``, score validation and test.

    Seeds everything with ``cfg.train.seed`` and runs Lightning with ``deterministic=True``, so on CPU the
    same config and caches give the same result. Weights of the best validation epoch are restored
    before testing. Perf figures are also sent to ``logger`` as ``perf/*`` metrics.

    Args:
        cfg: The resolved config (``train`` and ``data`` sections are read).
        selections: Classifier inputs (see ``resolve_selection``).
        callbacks: Extra callbacks, e.g. ``PyTorchLightningPruningCallback(trial, monitor="val/acc")``.
        logger: A Lightning logger (e.g. ``MLFlowLogger``); None logs nothing.
        fold: The validation fold of ``cfg.data.cv_folds`` (0 for the single split).

    Raises:
        CacheError: missing or mismatching caches. FusionConfigError / UnknownNameError: bad fusion.
    """
    with torch_threads(cfg.train.threads):
        return _fit_and_evaluate(cfg, selections, callbacks, logger, fold)


def check_fit(cfg: BenchConfig, selections: Sequence[Selection]) -> None:
    """Raise what ``fit_and_evaluate`` would raise for bad input, without training (layers, rows, fusion, widths).

    Raises:
        CacheError: missing or mismatching caches, a layer out of range. FusionConfigError / UnknownNameError: bad
            fusion.
    """
    dm = CachedFeatureDataModule.from_config(selections, cfg)
    dm.setup()
    FusionClassifier.from_config(dm.input_dims, dm.num_classes, cfg.train)


def _fit_and_evaluate(
    cfg: BenchConfig,
    selections: Sequence[Selection],
    callbacks: Sequence[L.Callback],
    logger: Logger | None,
    fold: int,
) -> FitResult:
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    dm = CachedFeatureDataModule.from_config(selections, cfg, fold)
    dm.setup()
    model = FusionClassifier.from_config(dm.input_dims, dm.num_classes, cfg.train)
    best, timer = RestoreBest(cfg.train.monitor), FitTimer()
    own: list[L.Callback] = [best, timer]
    if cfg.train.patience:
        own.append(EarlyStopping(cfg.train.monitor, patience=cfg.train.patience, mode=monitor_mode(cfg.train.monitor)))
    with quiet_lightning():
        trainer = make_trainer(cfg, [*own, *callbacks], logger)
        trainer.fit(model, datamodule=dm)
        test = trainer.test(model, datamodule=dm, verbose=False)[0]
    feature_bytes = dm.feature_bytes  # before the timing pass re-reads the test split
    head_ms, test_pred = time_inference(model, dm.test_dataloader())
    _, val_pred = time_inference(model, dm.val_dataloader(), warmup=0, timed_batches=1)
    result = FitResult(
        val_acc=best.best_metrics.get(tracking.VAL_ACC, float("nan")),
        val_f1=best.best_metrics.get(tracking.VAL_F1, float("nan")),
        val_loss=best.best_metrics.get(tracking.VAL_LOSS, float("nan")),
        test_acc=float(test[tracking.TEST_ACC]),
        test_f1=float(test[tracking.TEST_F1]),
        best_epoch=best.best_epoch,
        epochs=timer.epochs,
        params=model.param_count,
        fit_s=timer.fit_s,
        head_ms_per_sample=head_ms,
        fused_dim=model.fused_dim,
        feature_bytes=feature_bytes,
        peak_rss_mb=peak_rss_mb(),
        test_pred=test_pred.numpy(),
        val_pred=val_pred.numpy(),
        val_rows=dm.datasets["val"].rows.copy(),
    )
    if logger is not None:
        logger.log_metrics({k: float(v) for k, v in result.metrics().items() if k.startswith("perf/")})
    log.debug("fit %s: %s", [f"{s.name}@{s.layer}" for s in selections], result)
    return result
