"""FusionClassifier and ``fit_and_evaluate``: learning, chance on noise, determinism, metrics, perf, callbacks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest import mock

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from helpers_features import make_model
from lightning.pytorch.loggers.logger import Logger

from benchmark.core.config import BenchConfig, load_config, with_values
from lightning_modules.callbacks import RestoreBest, time_inference
from lightning_modules.components.fusion import fusion_names
from lightning_modules.datamodule import CachedFeatureDataModule
from lightning_modules.module import FusionClassifier
from lightning_modules.train import FitResult, fit_and_evaluate


class MemoryLogger(Logger):
    """Keeps every logged metric as (step, name, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int | None, str, float]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.extend((step, k, float(v)) for k, v in metrics.items())

    def series(self, name: str) -> list[float]:
        return [v for _, k, v in self.rows if k == name]


def _cfg(**values: Any) -> BenchConfig:
    base = {
        "train.max_epochs": 15,
        "train.lr": 3e-3,
        "train.batch_size": 32,
        "train.patience": 5,
        "train.hidden_dims": (32,),
    }
    return with_values(load_config(env={}), {**base, **values})


def test_learns_separable_features(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=300, n_test=150, hidden=16, num_classes=3)
    result = fit_and_evaluate(_cfg(), [m.select("last")])
    assert result.test_acc > 0.95 and result.val_acc > 0.95 and result.test_f1 > 0.95


def test_random_labels_stay_near_chance(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=300, n_test=300, hidden=16, random_labels=True)
    result = fit_and_evaluate(_cfg(), [m.select(-1)])
    assert abs(result.test_acc - 0.5) < 0.1


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=200, n_test=100, hidden=8, signal=1.0)
    cfg = _cfg(**{"train.max_epochs": 4, "train.dropout": 0.3})
    a, b = fit_and_evaluate(cfg, [m.select(-1)]), fit_and_evaluate(cfg, [m.select(-1)])
    c = fit_and_evaluate(with_values(cfg, {"train.seed": 1}), [m.select(-1)])
    scores = ("val_acc", "val_f1", "val_loss", "test_acc", "test_f1", "best_epoch", "epochs", "params", "feature_bytes")
    assert [getattr(a, k) for k in scores] == [getattr(b, k) for k in scores]
    assert a.val_loss != c.val_loss


def test_metric_names_perf_and_best_epoch(tmp_path: Path) -> None:
    a = make_model(tmp_path, "a", n_train=120, n_test=60, hidden=8, signal=1.0)
    b = make_model(tmp_path, "b", n_train=120, n_test=60, hidden=12, signal=1.0)
    logger = MemoryLogger()
    cfg = _cfg(
        **{
            "train.fusion": "residual:quaternion",
            "train.proj_dim": 0,
            "train.max_epochs": 6,
            "train.patience": 0,
            "train.lr": 0.05,
        }
    )
    result = fit_and_evaluate(cfg, [a.select(-1), b.select("mean:last2")], logger=logger)
    names = {k for _, k, _ in logger.rows}
    assert {
        "train/loss",
        "train/acc",
        "train/f1",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/acc_best",
        "test/acc",
        "test/f1",
    } <= names
    assert len(logger.series("train/acc")) == len(logger.series("train/f1")) == 6  # once per epoch
    assert {k for k in result.metrics() if k.startswith("perf/")} <= names
    val_loss = logger.series("val/loss")
    assert len(val_loss) == result.epochs == 6
    assert result.best_epoch == min(range(6), key=val_loss.__getitem__)
    assert result.val_loss == pytest.approx(min(val_loss))
    assert logger.series("test/acc") == [pytest.approx(result.test_acc)]
    assert result.fused_dim == 8  # d = min(8, 12), quaternion keeps d
    assert result.params == sum(8 * h + 8 for h in (8, 12)) + 8 * 32 + 32 + 32 * 2 + 2
    assert result.fit_s > 0 and result.head_ms_per_sample > 0 and result.peak_rss_mb > 0
    n_train, n_val = 108, 12  # 10% stratified
    per_row = (8 + 2 * 12) * 2  # float16 bytes: one layer of a, two of b
    assert result.feature_bytes == per_row * (n_train + 6 * (n_train + n_val) + 60)  # scaler + 6 epochs + test


def test_train_scores_are_the_epochs_accuracy_and_macro_f1(tmp_path: Path) -> None:
    from torchmetrics.functional.classification import multiclass_f1_score

    m = make_model(tmp_path, n_train=90, n_test=30, hidden=8, num_classes=3, signal=0.8)
    dm = CachedFeatureDataModule([m.select(-1)], batch_size=16)
    # lr 0 and no dropout: the weights never change, so each epoch's train scores are those of one fixed model.
    model = FusionClassifier(dm.input_dims, dm.num_classes, hidden_dims=(8,), dropout=0.0, lr=0.0)
    logger = MemoryLogger()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=dm)
    model.eval()
    xs, y = dm.datasets["train"][np.arange(len(dm.datasets["train"]))]
    with torch.no_grad():
        pred = model(xs).argmax(-1)
    acc, f1 = float((pred == y).float().mean()), float(multiclass_f1_score(pred, y, 3, average="macro"))
    assert 0.2 < acc < 0.95 and f1 != pytest.approx(acc)  # informative: not chance-free, and F1 is not accuracy
    assert logger.series("train/acc") == [pytest.approx(acc)] * 2
    assert logger.series("train/f1") == [pytest.approx(f1)] * 2


def test_early_stopping_ends_the_fit(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=100, n_test=50, hidden=8, random_labels=True)
    result = fit_and_evaluate(_cfg(**{"train.max_epochs": 60, "train.patience": 2, "train.lr": 0.01}), [m.select(-1)])
    assert result.epochs < 60 and result.epochs == result.best_epoch + 3


def test_extra_callbacks_run_and_optuna_can_prune(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from optuna_integration import PyTorchLightningPruningCallback

    m = make_model(tmp_path, n_train=80, n_test=40, hidden=8)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        fit_and_evaluate(_cfg(), [m.select(-1)], callbacks=[PyTorchLightningPruningCallback(trial, monitor="val/acc")])
    assert trial.storage.get_trial(trial._trial_id).intermediate_values  # val/acc was reported


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_fusion_trains_one_step(tmp_path: Path, fusion: str) -> None:
    a = make_model(tmp_path, "a", n_train=40, n_test=20, hidden=8)
    b = make_model(tmp_path, "b", n_train=40, n_test=20, hidden=12)
    dm = CachedFeatureDataModule([a.select(-1), b.select(1)], batch_size=8)
    model = FusionClassifier(dm.input_dims, dm.num_classes, fusion=fusion, proj_dim=16, hidden_dims=(8,))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    assert all(not torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True) if p.requires_grad)


def test_projection_is_skipped_only_for_plain_concat() -> None:
    plain = FusionClassifier([8, 12], 3, fusion="concat")
    assert len(plain.projections) == 0 and plain.fused_dim == 20
    projected = FusionClassifier([8, 12], 3, fusion="residual:concat", proj_dim=16)
    assert len(projected.projections) == 2 and projected.fused_dim == 32
    logits = projected([torch.randn(4, 8), torch.randn(4, 12)])
    assert logits.shape == (4, 3)


def test_restore_best_and_inference_timer() -> None:
    cb = RestoreBest("val/acc")
    assert cb.mode == "max" and RestoreBest().mode == "min"
    model = FusionClassifier([4], 2, hidden_dims=(4,))
    batches = [([torch.randn(10, 4)], torch.zeros(10, dtype=torch.long)) for _ in range(3)]
    ms, pred = time_inference(model, batches)
    assert ms > 0 and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expect = torch.cat([model(xs).argmax(-1) for xs, _ in batches])
    assert pred.tolist() == expect.tolist()
    assert math.isnan(time_inference(model, [])[0])


def test_inference_timer_streams_and_times_a_bounded_number_of_batches() -> None:
    model = FusionClassifier([4], 2, hidden_dims=(4,))
    events: list[str] = []
    model.register_forward_pre_hook(lambda m, args: events.append(f"forward {len(args[0][0])}"))
    clock = iter(range(1000))

    def batches():  # batch i has i + 1 rows, so the log tells which batch ran
        for i in range(6):
            events.append(f"read {i + 1}")
            yield [torch.randn(i + 1, 4)], torch.zeros(i + 1, dtype=torch.long)

    with mock.patch("lightning_modules.callbacks.time.perf_counter", lambda: float(next(clock))):
        ms, pred = time_inference(model, batches(), warmup=2, timed_batches=3)
    # Each batch is predicted before the next is read (never more than one in memory); 2 warm-up passes on the first.
    assert events == [
        "read 1",
        "forward 1",
        "forward 1",
        "forward 1",
        *[e for i in range(2, 7) for e in (f"read {i}", f"forward {i}")],
    ]
    assert len(pred) == sum(range(1, 7))
    assert ms == pytest.approx(1000.0 * 3 / (1 + 2 + 3))  # the fake clock ticks once per reading: 1 s per timed batch


def test_fit_result_names() -> None:
    r = FitResult(0.9, 0.8, 0.3, 0.85, 0.8, 3, 5, 100, 1.0, 0.01, 16, 1024, 500.0)
    assert r.metrics()["val/acc"] == 0.9 and r.metrics()["perf/param_count"] == 100 and r.asdict()["fit_s"] == 1.0


def test_fits_and_sweeps_run_with_train_threads_and_restore_them(tmp_path: Path) -> None:
    import lightning.pytorch as L
    import torch

    from lightning_modules.sweep import sweep_layers

    class Record(L.Callback):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.seen.append(torch.get_num_threads())

    m = make_model(tmp_path, n_train=60, n_test=30, hidden=8)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = Record()
        fit_and_evaluate(_cfg(**{"train.max_epochs": 2, "train.threads": 1}), [m.select(-1)], callbacks=[rec])
        assert rec.seen == [1, 1] and torch.get_num_threads() == 2  # one thread inside the fit, restored after
        sweep_layers(m.train_dir, m.test_dir, _cfg(**{"train.max_epochs": 1, "train.threads": 1}))
        assert torch.get_num_threads() == 2
        rec = Record()
        fit_and_evaluate(_cfg(**{"train.max_epochs": 1, "train.threads": 0}), [m.select(-1)], callbacks=[rec])
        assert rec.seen == [2]  # 0 leaves torch's setting alone
    finally:
        torch.set_num_threads(before)
