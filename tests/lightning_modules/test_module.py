"""The one engine (``UnitsClassifier`` + one ``Trainer``): learning, determinism, curves, pruning, devices, costs."""

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
from lightning_modules import engine
from lightning_modules.callbacks import time_inference
from lightning_modules.components.net import FusionNet
from lightning_modules.fit import fit_all_rows, fit_units, sweep_units
from lightning_modules.folds import Unit, units
from lightning_modules.fusion_index import fusion_names
from lightning_modules.scores import FitResult


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

    def series(self, name: str) -> list[tuple[int | None, float]]:
        return [(s, v) for s, k, v in self.rows if k == name]


def _cfg(**values: Any) -> BenchConfig:
    base = {
        "train.max_epochs": 15,
        "train.lr": 3e-3,
        "train.batch_size": 32,
        "train.patience": 5,
        "train.hidden_dims": (32,),
    }
    return with_values(load_config(env={}), {**base, **values})


def _one(cfg: BenchConfig, selections: list[Any], **kwargs: Any) -> FitResult:
    return fit_units(cfg, selections, [Unit(0, 0)], **kwargs)[0]


def test_learns_separable_features(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=300, n_test=150, hidden=16, num_classes=3)
    result = _one(_cfg(), [m.select("last")])
    assert result.test_acc > 0.95 and result.val_acc > 0.95 and result.test_f1 > 0.95


def test_random_labels_stay_near_chance(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=300, n_test=300, hidden=16, random_labels=True)
    assert abs(_one(_cfg(), [m.select(-1)]).test_acc - 0.5) < 0.1


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=200, n_test=100, hidden=8, signal=1.0)
    cfg = _cfg(**{"train.max_epochs": 4, "train.dropout": 0.3})
    a, b = _one(cfg, [m.select(-1)]), _one(cfg, [m.select(-1)])
    c = _one(with_values(cfg, {"train.seed": 1}), [m.select(-1)])
    scores = ("val_acc", "val_f1", "val_loss", "test_acc", "test_f1", "best_epoch", "epochs", "params")
    assert [getattr(a, k) for k in scores] == [getattr(b, k) for k in scores]
    assert a.val_loss != c.val_loss


def test_curves_go_to_the_logger_per_epoch_mean_and_per_unit(tmp_path: Path) -> None:
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
            "data.cv_folds": 2,
        }
    )
    results = fit_units(cfg, [a.select(-1), b.select("mean:last2")], units(2, 1), logger=logger)
    for name in ("train/loss", "val/loss", "val/acc"):
        mean = logger.series(name)
        assert [s for s, _ in mean] == list(range(6))  # step = epoch, once per epoch
        per_unit = [logger.series(f"{name}.unit{u}") for u in range(2)]
        assert [v for _, v in per_unit[0]] == results[0].curves[name]
        assert [v for _, v in mean] == pytest.approx([(x + y) / 2 for (_, x), (_, y) in zip(*per_unit, strict=True)])
    r = results[0]
    assert r.best_epoch == min(range(6), key=r.curves["val/loss"].__getitem__)
    assert r.val_loss == pytest.approx(min(r.curves["val/loss"]))
    assert r.fused_dim == 8  # d = min(8, 12), quaternion keeps d
    assert r.params == sum(8 * h + 8 for h in (8, 12)) + 8 * 32 + 32 + 32 * 2 + 2
    assert r.fit_s > 0 and r.head_ms_per_sample > 0 and r.peak_rss_mb > 0 and r.feature_bytes > 0
    assert len(r.val_rows) == 60 and len(r.val_pred) == 60 and r.val_pred.dtype == np.int64
    assert float((r.val_pred == np.load(a.train_dir / "labels.npy")[r.val_rows]).mean()) == pytest.approx(r.val_acc)


def test_early_stopping_ends_the_fit(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=100, n_test=50, hidden=8, random_labels=True)
    result = _one(_cfg(**{"train.max_epochs": 60, "train.patience": 2, "train.lr": 0.01}), [m.select(-1)])
    assert result.epochs < 60 and result.epochs == result.best_epoch + 3
    assert len(result.curves["val/loss"]) == result.epochs


def test_the_pruning_hook_sees_the_first_unit_and_can_stop_the_fit(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    m = make_model(tmp_path, n_train=80, n_test=40, hidden=8)
    seen: list[tuple[int, float]] = []

    def report(epoch: int, val_acc: float) -> None:
        seen.append((epoch, val_acc))
        if epoch == 2:
            raise optuna.TrialPruned("pruned at epoch 2")

    with pytest.raises(optuna.TrialPruned):
        fit_units(_cfg(**{"data.cv_folds": 2}), [m.select(-1)], units(2, 1), report=report)
    assert [e for e, _ in seen] == [0, 1, 2]
    full = fit_units(_cfg(**{"data.cv_folds": 2, "train.max_epochs": 3}), [m.select(-1)], units(2, 1))
    assert [v for _, v in seen] == full[0].curves["val/acc"]  # the first unit's, not the mean


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_fusion_trains(tmp_path: Path, fusion: str) -> None:
    a = make_model(tmp_path, "a", n_train=40, n_test=20, hidden=8)
    b = make_model(tmp_path, "b", n_train=40, n_test=20, hidden=12)
    cfg = _cfg(**{"train.fusion": fusion, "train.proj_dim": 16, "train.hidden_dims": (8,), "train.max_epochs": 2})
    r = fit_all_rows(cfg, [a.select(-1), b.select(1)], epochs=1)[0]
    L.seed_everything(cfg.train.seed, verbose=False)
    initial = FusionNet([8, 12], 2, fusion, 16, (8,), cfg.train.dropout, 0, cfg.train.seed)
    assert r.state.keys() == initial.state_dict().keys()
    assert all(not torch.equal(r.state[k], v) for k, v in initial.state_dict().items())  # every tensor trained


def test_projection_is_skipped_only_for_plain_concat() -> None:
    plain = FusionNet([8, 12], 3, fusion="concat")
    assert len(plain.projections) == 0 and plain.fused_dim == 20
    projected = FusionNet([8, 12], 3, fusion="residual:concat", proj_dim=16)
    assert len(projected.projections) == 2 and projected.fused_dim == 32
    assert projected([torch.randn(4, 8), torch.randn(4, 12)]).shape == (4, 3)


def test_inference_timer() -> None:
    model = FusionNet([4], 2, hidden_dims=(4,))
    batches = [([torch.randn(10, 4)], torch.zeros(10, dtype=torch.long)) for _ in range(3)]
    ms, pred = time_inference(model, batches)
    assert ms > 0 and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expect = torch.cat([model(xs).argmax(-1) for xs, _ in batches])
    assert pred.tolist() == expect.tolist()
    assert math.isnan(time_inference(model, [])[0])


def test_inference_timer_streams_and_times_a_bounded_number_of_batches() -> None:
    model = FusionNet([4], 2, hidden_dims=(4,))
    events: list[str] = []
    model.register_forward_pre_hook(lambda m, args: events.append(f"forward {len(args[0][0])}"))
    clock = iter(range(1000))

    def batches():  # batch i has i + 1 rows, so the log tells which batch ran
        for i in range(6):
            events.append(f"read {i + 1}")
            yield [torch.randn(i + 1, 4)], torch.zeros(i + 1, dtype=torch.long)

    with mock.patch("lightning_modules.callbacks.time.perf_counter", lambda: float(next(clock))):
        ms, pred = time_inference(model, batches(), warmup=2, timed_batches=3)
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


class _Record(L.Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen.append(torch.get_num_threads())


def test_fits_and_sweeps_run_with_train_threads_and_restore_them(tmp_path: Path, monkeypatch) -> None:
    m = make_model(tmp_path, n_train=60, n_test=30, hidden=8)
    rec = _Record()
    make = engine.make_trainer
    monkeypatch.setattr(engine, "make_trainer", lambda cfg, callbacks, *a: make(cfg, [*callbacks, rec], *a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _one(_cfg(**{"train.max_epochs": 2, "train.threads": 1}), [m.select(-1)])
        assert rec.seen == [1, 1] and torch.get_num_threads() == 2  # one thread inside the fit, restored after
        sweep_units(m.train_dir, m.test_dir, _cfg(**{"train.max_epochs": 1, "train.threads": 1}))
        assert rec.seen == [1, 1, 1] and torch.get_num_threads() == 2
        _one(_cfg(**{"train.max_epochs": 1, "train.threads": 0}), [m.select(-1)])
        assert rec.seen[-1] == 2  # 0 leaves torch's setting alone
    finally:
        torch.set_num_threads(before)


def test_every_path_trains_on_the_trainers_device(tmp_path: Path, monkeypatch) -> None:
    """``train.accelerator`` reaches the Trainer of every path, and the module's tensors live on its root device."""
    seen: list[tuple[str, str, list[str]]] = []
    fit = L.Trainer.fit

    def spy(self: L.Trainer, model: Any, *args: Any, **kwargs: Any) -> None:
        fit(self, model, *args, **kwargs)
        devices = sorted({str(t.device) for t in model.tensors()})
        seen.append((type(self.accelerator).__name__, str(self.strategy.root_device), devices))

    monkeypatch.setattr(L.Trainer, "fit", spy)
    makes: list[str] = []
    make = engine.make_trainer
    monkeypatch.setattr(engine, "make_trainer", lambda cfg, *a: (makes.append(cfg.train.accelerator), make(cfg, *a))[1])
    m = make_model(tmp_path, n_train=60, n_test=30, hidden=8)
    for accelerator in ("cpu", "auto"):
        cfg = _cfg(**{"train.max_epochs": 1, "train.accelerator": accelerator})
        fit_units(cfg, [m.select(-1)], [Unit(0, 0)])  # a trial's units
        sweep_units(m.train_dir, m.test_dir, cfg)  # a layer sweep
        fit_all_rows(cfg, [m.select(-1)], epochs=1)  # a refit (and what export ships)
    assert makes == ["cpu"] * 3 + ["auto"] * 3
    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert [s[1] for s in seen] == ["cpu"] * 3 + [want] * 3
    assert all(devices == [root] for _, root, devices in seen), seen  # parameters and resident features
    with pytest.raises(Exception, match="train.accelerator"):
        _cfg(**{"train.accelerator": "tpu9"})


def test_an_interrupt_inside_the_trainer_stays_an_interrupt(tmp_path: Path) -> None:
    """Lightning turns Ctrl+C into ``sys.exit(1)`` and ignores SIGINT; studies need the interrupt back."""
    import signal

    m = make_model(tmp_path, n_train=60, n_test=30, hidden=8)
    before = signal.getsignal(signal.SIGINT)

    def interrupt(epoch: int, val_acc: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_units(_cfg(**{"train.max_epochs": 2}), [m.select(-1)], [Unit(0, 0)], report=interrupt)
    assert signal.getsignal(signal.SIGINT) is before

    def interrupt_in_clean_up(epoch: int, val_acc: float) -> None:
        try:
            raise KeyboardInterrupt  # lands inside a library's context manager (torch.func.vmap's layer stack) ...
        finally:
            raise RuntimeError("!dynamicLayerStack.empty() INTERNAL ASSERT FAILED")  # ... whose clean-up then fails

    with pytest.raises(KeyboardInterrupt) as stopped:
        fit_units(_cfg(**{"train.max_epochs": 2}), [m.select(-1)], [Unit(0, 0)], report=interrupt_in_clean_up)
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(ValueError, match="a plain error"):  # an error that no interrupt caused stays itself

        def fail(epoch: int, val_acc: float) -> None:
            raise ValueError("a plain error")

        fit_units(_cfg(**{"train.max_epochs": 2}), [m.select(-1)], [Unit(0, 0)], report=fail)
    assert "INTERNAL ASSERT" in str(stopped.value.__cause__)  # the library's error is kept as the cause


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_once(monkeypatch, caplog) -> None:
    from benchmark.core import hardware

    monkeypatch.setattr(hardware, "_WARNED", set())
    said = lambda: [r for r in caplog.records if "bf16 matrix products are emulated" in r.getMessage()]  # noqa: E731
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    engine.make_trainer(_cfg(**{"train.precision": "bf16-mixed"}))
    assert said() == []  # AVX512-BF16 or AMX: bf16 is the fast path
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    engine.make_trainer(_cfg())
    assert said() == []  # 32-true never
    for _ in range(2):
        engine.make_trainer(_cfg(**{"train.precision": "bf16-mixed"}))
    (warning,) = said()  # once per process, not once per trial
    assert "--set train.precision=32-true" in warning.getMessage() and warning.levelname == "WARNING"


def test_the_trainer_runs_deterministic_algorithms_without_filling_fresh_tensors(monkeypatch) -> None:
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)  # torch's default, restored
    engine.make_trainer(_cfg())
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False
