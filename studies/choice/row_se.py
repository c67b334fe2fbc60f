"""The calibrated standard error of a difference in validation accuracy, from per-row validation predictions.

A candidate's units (fold, seed) are not independent: seeds of one fold share their validation rows, and folds share
most of their training rows, so the standard error of per-unit differences underestimates (Nadeau & Bengio 2003,
"Inference for the generalization error", Machine Learning 52; Bates, Hastie & Tibshirani 2023, "Cross-validation:
what does it estimate and how well does it do it?", JASA), and with one unit it is 0. Two estimates are combined:

- **Per-row** (paired, as McNemar's test pairs two classifiers on one test set; Dietterich 1998, Neural Computation
  10): each validation row's correctness averaged over seeds (out-of-fold with k folds: every train row once), the
  per-row differences ``d_i`` between the two candidates, variance ``var(d) / n``. It sees the noise of which rows
  were validated, also with one split and one seed.
- **Corrected resampled** (Nadeau & Bengio's corrected resampled t-test; its repeated k-fold form, Bouckaert & Frank
  2004, PAKDD): the J per-unit accuracy differences, variance ``(1/J + n_val/n_train) * var(delta)``. The
  ``n_val/n_train`` term corrects for the training rows the units share; it needs J >= 2.

Each misses part of the variance (the per-row one the training-set noise, the corrected one is unstable with a
few units), so the larger of the two is used. Candidates validated on other rows (another split, another cache)
are never paired row by row: their SE is the unpaired ``sqrt(var_a/n_a + var_b/n_b)`` of their own rows.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

METHOD = "paired-rows+corrected-resampled"
METHOD_TEXT = (
    "the larger of (a) the SE of the paired per-row differences in validation correctness (each row averaged over "
    "seeds; out-of-fold with k folds) and (b) the Nadeau-Bengio corrected resampled SE of the per-unit differences, "
    "(1/J + n_val/n_train) x their variance (Nadeau & Bengio 2003; Bouckaert & Frank 2004); candidates validated on "
    "other rows are compared unpaired"
)


@dataclass(frozen=True)
class ValRows:
    """One candidate's validation predictions over its units, concatenated unit by unit.

    Attributes:
        rows: ``(total,)`` row indices into the validation rows' cache, unit after unit.
        pred: ``(total,)`` predicted labels, in ``rows`` order.
        label: ``(total,)`` true labels of those rows.
        sizes: ``(units,)`` rows per unit (unit ``u = fold * seeds + seed``).
        ratio: ``n_val / n_train`` of one unit (the corrected resampled test's training-overlap term).
    """

    rows: np.ndarray
    pred: np.ndarray
    label: np.ndarray
    sizes: np.ndarray
    ratio: float

    def unit_acc(self) -> np.ndarray:
        """Validation accuracy of each unit ``(units,)``."""
        correct = (self.pred == self.label).astype(np.float64)
        bounds = np.concatenate([[0], np.cumsum(self.sizes)])
        return np.array([correct[a:b].mean() if b > a else math.nan for a, b in zip(bounds, bounds[1:], strict=False)])

    def per_row(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct rows (sorted) and each one's correctness averaged over the units that validated it."""
        ids, inverse = np.unique(self.rows, return_inverse=True)
        hits = np.bincount(inverse, weights=(self.pred == self.label).astype(np.float64), minlength=ids.size)
        return ids, hits / np.bincount(inverse, minlength=ids.size)

    def labels_by_row(self) -> np.ndarray:
        """The label of each distinct row (sorted by row)."""
        ids, first = np.unique(self.rows, return_index=True)
        return np.asarray(self.label[first])

    def to_bytes(self) -> bytes:
        """A compact ``.npz`` (int32 rows, int16 labels) for the MLflow artifact."""
        buf = io.BytesIO()
        small = np.int16 if max(int(self.pred.max(initial=0)), int(self.label.max(initial=0))) < 2**15 else np.int64
        np.savez_compressed(
            buf,
            rows=self.rows.astype(np.int32),
            pred=self.pred.astype(small),
            label=self.label.astype(small),
            sizes=self.sizes.astype(np.int64),
            ratio=np.float64(self.ratio),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ValRows:
        """Read ``to_bytes``'s output back."""
        z = np.load(io.BytesIO(blob))
        rows, pred, label, sizes = (np.asarray(z[k], dtype=np.int64) for k in ("rows", "pred", "label", "sizes"))
        return cls(rows, pred, label, sizes, float(z["ratio"]))


def val_rows(preds: list[np.ndarray], rows: list[np.ndarray], labels: np.ndarray, n_train: list[int]) -> ValRows | None:
    """A candidate's ``ValRows`` from its units' ``val_pred`` / ``val_rows`` (None when any unit lacks them).

    Args:
        preds: Per unit, its predicted validation labels.
        rows: Per unit, those rows' indices into ``labels``.
        labels: The labels of the cache the rows index.
        n_train: Per unit, its training rows (for ``ratio``).
    """
    if not preds or any(p.size == 0 or p.size != r.size for p, r in zip(preds, rows, strict=True)):
        return None
    all_rows = np.concatenate(rows).astype(np.int64)
    sizes = np.array([r.size for r in rows], dtype=np.int64)
    ratio = float(np.mean(sizes / np.maximum(np.asarray(n_train, dtype=np.float64), 1.0)))
    return ValRows(all_rows, np.concatenate(preds).astype(np.int64), np.asarray(labels)[all_rows], sizes, ratio)


def paired(a: ValRows, b: ValRows) -> bool:
    """Whether two candidates were validated on the same rows (with the same labels), so rows pair."""
    ia, ib = np.unique(a.rows), np.unique(b.rows)
    return ia.size == ib.size and bool(np.array_equal(ia, ib)) and np.array_equal(a.labels_by_row(), b.labels_by_row())


def row_se(a: ValRows, b: ValRows) -> float:
    """SE of the per-row paired differences ``a - b`` (``var(d) / n``, ddof 1), or the unpaired SE on other rows."""
    _, ca = a.per_row()
    _, cb = b.per_row()
    if not paired(a, b):
        return unpaired_se(ca, cb)
    d = ca - cb
    return float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0


def unpaired_se(ca: np.ndarray, cb: np.ndarray) -> float:
    """``sqrt(var_a/n_a + var_b/n_b)`` of two candidates' per-row correctness (rows not shared)."""
    var = [c.var(ddof=1) / c.size if c.size > 1 else 0.0 for c in (ca, cb)]
    return float(math.sqrt(sum(var)))


def corrected_resampled_se(a: ValRows, b: ValRows) -> float:
    """Nadeau & Bengio's corrected SE of the per-unit accuracy differences (0 with fewer than 2 units)."""
    if a.sizes.size != b.sizes.size or a.sizes.size < 2:
        return 0.0
    delta = a.unit_acc() - b.unit_acc()
    delta = delta[np.isfinite(delta)]
    if delta.size < 2:
        return 0.0
    return float(math.sqrt((1.0 / delta.size + max(a.ratio, b.ratio)) * delta.var(ddof=1)))


def calibrated_se(a: ValRows, b: ValRows) -> float:
    """The SE of ``mean(a) - mean(b)`` this module defines: the larger of the per-row and corrected estimates.

    The corrected estimate applies only to paired candidates (the same rows: the same folds).
    """
    rows = row_se(a, b)
    return max(rows, corrected_resampled_se(a, b)) if paired(a, b) else rows
