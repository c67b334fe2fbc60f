"""``HeadScore``: what every trained head reports, whether fitted alone or as one layer of a batched sweep."""

from __future__ import annotations

from dataclasses import dataclass


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
