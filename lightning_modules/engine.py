"""``UnitsClassifier``: the one LightningModule that trains heads, K units of one configuration at once.

K is folds x seeds for a study trial or ``layerfuse fit``, layers x folds x seeds for a layer sweep, seeds for a
refit. Heads whose units hold equally many training rows form one ``UnitStack`` (k folds of N rows differ by at
most one row: at most two stacks); one Lightning ``Trainer`` (``make_trainer``) trains them all on
``train.accelerator`` with ``train.precision``: the module's tensors and resident features are built on the
Trainer's device in ``on_fit_start``.

One ``training_step`` is one epoch of stacked batches, and one ``validation_step`` one validation pass:
Lightning's loop costs about 0.5 ms per step (measured on this project's CPU runners), a fifth of a stacked
step of a small trial, so the batches of an epoch run inside the step. Optimisation is manual: each stack owns
its Adam, rebuilt without a stopped head's moments, which ``configure_optimizers`` cannot express.

Learning curves: at each epoch's end the module logs ``train/loss``, ``val/loss``, ``val/acc`` (the mean over the
heads that trained that epoch) and, with ``unit_curves``, each head's values as ``<name>.unit<u>``, to the
Trainer's logger with step = epoch (``self.log`` would use the optimizer-step counter, which manual steps of our
own optimizers do not advance).
"""

from __future__ import annotations

import logging
import signal
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, Dataset

from benchmark.core import tracking
from benchmark.core.faults import caused_by_interrupt
from benchmark.core.hardware import warn_if_emulated_bf16
from lightning_modules.components.net import FusionNet
from lightning_modules.datamodule import CachedFeatureDataModule
from lightning_modules.features import ShuffledBatchSampler
from lightning_modules.stack import UnitStack
from lightning_modules.unit_rows import RESIDENT_BYTES, Head, SourceBlocks, UnitRows

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

    from benchmark.core.config import BenchConfig
    from benchmark.core.config_sections import TrainConfig

log = logging.getLogger(__name__)

Report = Callable[[int, float], None]  # (epoch, first head's val/acc): may raise to prune the trial
CURVES = (tracking.TRAIN_LOSS, tracking.VAL_LOSS, tracking.VAL_ACC)
LAYERS_MEAN = (
    "layers_mean"  # suffix of a sweep's per-epoch mean over every (unit, layer) head, e.g. val/loss.layers_mean
)


def unit_curve(name: str, unit: int) -> str:
    """The metric name of one unit's learning curve, e.g. ``val/loss.unit3``."""
    return f"{name}.unit{unit}"


@dataclass
class UnitsPlan:
    """What the engine trains.

    Attributes:
        dms: Each unit's data (its fold's ``CachedFeatureDataModule``, set up; units of one fold share it).
        seeds: Each unit's seed (initial weights were built with it; it orders the unit's batches).
        heads: The heads, unit-major; ``Head.unit`` indexes ``dms``.
        nets: Each head's initial ``FusionNet``.
    """

    dms: list[CachedFeatureDataModule]
    seeds: list[int]
    heads: list[Head]
    nets: list[FusionNet]


class UnitsClassifier(L.LightningModule):
    """K heads of one configuration (see the module docstring), trained by one ``Trainer``.

    Args:
        plan: The units, heads and initial nets.
        train: ``cfg.train`` (lr, weight_decay, batch_size, monitor, patience).
        validate: Score validation every epoch (early stopping, best epoch); False for a refit on all rows.
        report: Called with the first head's ``val/acc`` after each epoch while it trains (Optuna pruning).
        unit_curves: Also log each head's curve (for a few units; a sweep's hundreds of heads log none).
    """

    def __init__(
        self,
        plan: UnitsPlan,
        train: TrainConfig,
        validate: bool,
        report: Report | None = None,
        unit_curves: bool = True,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.plan, self.train_cfg, self.validate, self.report, self.unit_curves = (
            plan,
            train,
            validate,
            report,
            unit_curves,
        )
        self.stacks: list[UnitStack] = []
        self.blocks: dict[str, SourceBlocks] = {}

    def on_fit_start(self) -> None:
        """Build the stacks and resident features on the Trainer's device."""
        self.stacks = build_stacks(self.plan, self.train_cfg, self.device, self.validate)
        for seen in _RECORDERS:
            seen.append(sorted({str(t.device) for t in self.tensors()}))

    def tensors(self) -> list[torch.Tensor]:
        """Every parameter and resident feature tensor the module trains with."""
        out = [t for s in self.stacks for t in s.tensors()]
        blocks = {id(b): b for s in self.stacks for r in s.rows.values() if (b := r.blocks) is not None}
        return out + [t for b in blocks.values() for t in b.blocks]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One epoch of every stack (see the module docstring)."""
        for stack in self.stacks:
            if stack.active:
                stack.train_epoch(self.manual_backward)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Validate every stack: curves, best epochs, heads that stop leave; report the first head for pruning."""
        epoch, first = self.current_epoch, None
        for k, stack in enumerate(self.stacks):
            if not stack.active:
                continue
            was_first = k == 0 and stack.active[0] == 0
            _, acc, _, _ = stack.validate(epoch)
            first = float(acc[0]) if was_first else first
        self._log_curves(epoch)  # before the report, which may end the fit (a pruned trial keeps this epoch)
        if not any(s.active for s in self.stacks):
            self.trainer.should_stop = True
        if first is not None and self.report is not None:
            self.report(epoch, first)

    def on_train_epoch_end(self) -> None:
        """Log a refit's learning curve (a fit that validates logged its epoch in ``validation_step``)."""
        if not self.validate:
            self._log_curves(self.current_epoch)

    def _log_curves(self, epoch: int) -> None:
        """Log the epoch's learning curves (step = epoch)."""
        if self.logger is None:
            return
        metrics: dict[str, float] = {}
        for name in CURVES:
            values = {u: c[name][epoch] for u, c in enumerate(self.curves()) if name in c and len(c[name]) > epoch}
            if values:
                metrics[name] = statistics.fmean(values.values())
                if self.unit_curves:
                    metrics |= {unit_curve(name, u): v for u, v in values.items()}
        self.logger.log_metrics(metrics, step=epoch)

    def curves(self) -> list[dict[str, list[float]]]:
        """Each head's curves, in plan order."""
        by_head = {i: c for s in self.stacks for i, c in zip(s.members, s.curves, strict=True)}
        return [by_head[i] for i in range(len(by_head))]

    def configure_optimizers(self) -> None:
        """None: each stack steps its own Adam (see the module docstring)."""
        return None


_RECORDERS: list[list[list[str]]] = []


@contextmanager
def record_devices() -> Iterator[list[list[str]]]:
    """Collect, per fit started in the block, the devices of the module's tensors (``benchmark.bench.gpu_check``)."""
    seen: list[list[str]] = []
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)


def build_stacks(plan: UnitsPlan, train: TrainConfig, device: torch.device, validate: bool) -> list[UnitStack]:
    """Group heads by their unit's training rows (first-seen order); one ``UnitStack`` per group on ``device``."""
    splits = ("train", "val") if validate else ("train",)
    groups: dict[int, list[int]] = {}  # train rows -> heads
    for i, h in enumerate(plan.heads):
        groups.setdefault(len(plan.dms[h.unit].datasets["train"]), []).append(i)
    first = plan.dms[0].datasets
    blocks: dict[str, SourceBlocks] = {}
    if sum(SourceBlocks.nbytes(first[s], plan.heads) for s in splits) <= RESIDENT_BYTES:
        blocks["train"] = SourceBlocks(first["train"], plan.heads, device)
        if validate:
            same = [[f.path for f in src.files] for src in first["val"].sources] == blocks["train"].paths
            blocks["val"] = blocks["train"] if same else SourceBlocks(first["val"], plan.heads, device)
    stacks = []
    for members in groups.values():
        units = list(dict.fromkeys(plan.heads[i].unit for i in members))
        local = [Head(units.index(plan.heads[i].unit), plan.heads[i].sources) for i in members]
        rows = {
            s: UnitRows([plan.dms[u].datasets[s] for u in units], local, device, blocks.get(s))
            for s in (*splits, "test")
        }
        t = train
        samplers = [
            ShuffledBatchSampler(len(plan.dms[u].datasets["train"]), t.batch_size, True, plan.seeds[u]) for u in units
        ]
        eval_bs = plan.dms[units[0]].eval_batch_size
        nets = [plan.nets[i] for i in members]
        stack = UnitStack(
            nets, rows, samplers, t.lr, t.weight_decay, t.monitor, t.patience, plan.dms[0].num_classes, eval_bs
        )
        stack.members = members
        stacks.append(stack)
    return stacks


MLFLOW_BATCH = 1000  # metrics per ``log_batch`` call (MLflow's limit)


class RunLogger(MLFlowLogger):
    """``MLFlowLogger`` writing into an existing run that its caller opened and closes.

    Each epoch's metrics are kept and written in one ``log_batch`` when the fit ends (``finalize``, which Lightning
    also calls when a fit raises, e.g. a pruned trial): one call per epoch cost 20-150 ms on the SQLite store
    (measured, 45 metrics), as much as an epoch of a small trial. Lightning's ``finalize`` would also mark the run
    FINISHED; a trial, refit or fit run ends only when its caller has logged its results.
    """

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        super().__init__(run_id=run_id, tracking_uri=tracking_uri)
        self.pending: list[tuple[str, float, int, int]] = []  # (name, value, timestamp ms, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Keep the metrics until the fit ends."""
        now = int(time.time() * 1000)
        self.pending += [(k, float(v), now, step or 0) for k, v in metrics.items()]

    def finalize(self, status: str = "success") -> None:
        """Write the kept metrics; leave the run's status to its owner."""
        from mlflow.entities import Metric

        metrics = [Metric(*m) for m in self.pending]
        self.pending = []
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.experiment.log_batch(self.run_id, metrics=metrics[start : start + MLFLOW_BATCH])


def run_logger(cfg: BenchConfig, run_id: str | None) -> Logger | None:
    """A logger of learning curves into run ``run_id`` of ``tracking.uri`` (None: no logger)."""
    if run_id is None:
        return None
    return RunLogger(run_id=run_id, tracking_uri=cfg.tracking.uri)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit INFO banners and irrelevant warnings (one study runs hundreds of fits)."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Batches are read inside the step from resident or cached features: workers would only add start-up.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*returned `None`, this fit will run with no optimizer.*")
            warnings.filterwarnings("ignore", ".*treespec.*")  # Lightning internals vs. newer torch
            warnings.filterwarnings("ignore", ".*but have no `val_dataloader`.*")  # a refit validates nothing
            yield
    finally:
        lightning_log.setLevel(level)


def make_trainer(
    cfg: BenchConfig, callbacks: Sequence[L.Callback] = (), logger: Logger | None = None, validate: bool = True
) -> L.Trainer:
    """The quiet, deterministic single-device ``Trainer`` of every head (no checkpoints, no progress bar).

    ``validate=False`` runs no validation loop (a refit on all training rows has no validation rows).
    ``inference_mode=False``: a head that stops leaves the stack inside the validation step, and its kept
    parameters must stay ordinary (grad-requiring) tensors.
    """
    trainer = L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=1,
        precision=cfg.train.precision,  # type: ignore[arg-type]
        max_epochs=cfg.train.max_epochs,
        deterministic=True,
        inference_mode=False,
        callbacks=list(callbacks),
        logger=logger if logger is not None else False,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=None if validate else 0,
        log_every_n_steps=1,  # an epoch is one step: without it Lightning warns that it logs too rarely
    )
    # Deterministic algorithms also fill every fresh tensor with NaN (a guard against reading uninitialised memory,
    # which no kernel here does): a stacked weight gradient's output, 440 MB in a residual:all cell, every step.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    if cfg.train.precision == "bf16-mixed" and trainer.strategy.root_device.type == "cpu":
        warn_if_emulated_bf16("train.precision=bf16-mixed", "use --set train.precision=32-true")
    return trainer


def train_units(
    cfg: BenchConfig, module: UnitsClassifier, logger: Logger | None = None
) -> tuple[UnitsClassifier, float]:
    """Fit ``module`` with a ``Trainer`` for ``cfg.train``; returns it and the training wall seconds (``Timer``)."""
    timer = Timer()
    sigint = signal.getsignal(signal.SIGINT)
    with quiet_lightning():
        trainer = make_trainer(cfg, [timer], logger, module.validate)
        # An epoch is one step (see the module docstring); a list of one item is all the dataset it needs.
        one_step: DataLoader[int] = DataLoader(cast("Dataset[int]", [0]), batch_size=None)
        try:
            trainer.fit(module, train_dataloaders=one_step, val_dataloaders=one_step if module.validate else None)
        except (Exception, SystemExit) as err:
            # Lightning turns Ctrl+C into sys.exit(1) and ignores SIGINT from then on, and an interrupt landing in a
            # library's clean-up comes back as its error; a study, refit or fit handles an interrupt itself (runs
            # marked KILLED, the CLI's exit code), so it gets it back as one.
            if not caused_by_interrupt(err):
                raise
            signal.signal(signal.SIGINT, sigint)
            raise KeyboardInterrupt from err
    return module, float(timer.time_elapsed("train"))


def unit_val_rows(dm: CachedFeatureDataModule) -> np.ndarray:
    """A unit's validation rows (indices into the train cache, or into the validation cache when it has one)."""
    return np.asarray(dm.datasets["val"].rows, dtype=np.int64)
