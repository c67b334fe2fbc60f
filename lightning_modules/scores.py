"""What the training engine returns: per trained head, its scores at the best epoch, costs and learning curves.

``FitResult`` is one unit (fold, seed) of a configuration; ``LayerScore`` one (unit, layer) head of a layer sweep;
``AllRowsFit`` one seed of a refit on every training row. Each carries its learning curve (``curves``: per epoch,
``train/loss`` and, when it validated, ``val/loss`` and ``val/acc``) and, when it validated, ``val_pred`` and
``val_rows``: its predicted labels of its validation rows at the best epoch and those rows' indices into the train
cache (into the validation cache for a dataset with its own validation split), in the same order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from benchmark.core import tracking


def _no_rows() -> np.ndarray:
    return np.empty(0, np.int64)


@dataclass(frozen=True, slots=True)
class HeadScore:
    """Scores of one trained head at its best validation epoch.

    Attributes:
        val_acc, val_f1, val_loss: Validation scores of the restored best epoch.
        test_acc, test_f1: Test scores of the same weights.
        best_epoch: 0-based epoch whose weights were kept.
        epochs: Epochs trained (early stopping may end before ``max_epochs``).
    """

    val_acc: float
    val_f1: float
    val_loss: float
    test_acc: float
    test_f1: float
    best_epoch: int
    epochs: int


ARRAYS = ("test_pred", "val_pred", "val_rows")  # numpy fields, left out of ``asdict`` and equality


@dataclass(frozen=True, slots=True)
class FitResult(HeadScore):
    """Scores (at the best validation epoch), costs and curves of one unit of a configuration.

    Attributes:
        params: Trainable parameters.
        fit_s: Wall seconds of training, the engine's whole fit divided by its units.
        head_ms_per_sample: Forward-pass milliseconds per test sample, features in memory, after warm-up.
        fused_dim: Width of the fused features fed to the head.
        feature_bytes: Bytes read from feature files by the fit of all units (statistics, train, val and test).
        peak_rss_mb: Peak resident memory of the process so far (run one fit per process to attribute it).
        test_pred: Predicted test labels in test order (for paired tests between configurations).
        val_pred, val_rows: Predicted labels of the unit's validation rows at its best epoch, and those rows.
        curves: Per epoch ``train/loss``, ``val/loss``, ``val/acc`` (``tracking`` names -> one value per epoch).
    """

    params: int
    fit_s: float
    head_ms_per_sample: float
    fused_dim: int
    feature_bytes: int
    peak_rss_mb: float
    test_pred: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=_no_rows)
    val_pred: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=_no_rows)
    val_rows: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=_no_rows)
    curves: dict[str, list[float]] = dataclasses.field(repr=False, compare=False, default_factory=dict)

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
        """Field name -> value (scalars only)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in (*ARRAYS, "curves")}


@dataclass(frozen=True, slots=True)
class LayerScore(HeadScore):
    """One (unit, layer) head of a sweep, as a separate fit of that layer would report it."""

    layer: int
    feature_bytes: int = 0  # bytes the whole sweep read from feature files (all its layers, all passes, the probe)
    probe_acc: float = dataclasses.field(default=math.nan, compare=False)  # the layer's ridge probe (NaN: no probe)
    screened: str = ""  # why this head did not train ("probe", "race: after fold f"); empty when it trained
    val_pred: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=_no_rows)
    val_rows: np.ndarray = dataclasses.field(repr=False, compare=False, default_factory=_no_rows)
    curves: dict[str, list[float]] = dataclasses.field(repr=False, compare=False, default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays as lists); ``from_json`` reads it back."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**out, "val_pred": self.val_pred.tolist(), "val_rows": self.val_rows.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerScore:
        """Inverse of ``to_json``."""
        arrays = {k: np.asarray(data.get(k, []), dtype=np.int64) for k in ("val_pred", "val_rows")}
        return cls(**{**data, **arrays})


@dataclass(frozen=True)
class AllRowsFit:
    """A head trained on all training rows, its test scores, and what applying it to new features needs.

    Attributes:
        test_acc, test_f1: Test scores.
        test_pred: Predicted test labels in test order.
        epochs: Epochs trained.
        fit_s: Wall seconds of training, the engine's whole fit divided by its seeds.
        train_rows: Training rows used (all of the train split).
        net: ``FusionNet`` keyword arguments (``input_dims``, ``num_classes``, fusion and head settings).
        state: ``FusionNet`` weights (CPU tensors).
        means, stds: Per input, the ``(H,)`` float32 standardisation statistics, or None when not standardised.
        label_names: Class names, label id order.
        curves: ``train/loss`` per epoch.
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
    curves: dict[str, list[float]] = dataclasses.field(repr=False, default_factory=dict)
