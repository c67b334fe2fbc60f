"""The low-fidelity pre-screen of a sweep: a closed-form ridge probe of every candidate on every fold.

Before any MLP head trains, each candidate input (a layer, or a last-k aggregation) is scored by a ridge classifier
(one-hot +-1 targets, as sklearn's ``RidgeClassifierCV``) on the same fold data modules the heads train on (the same
rows, the same train-part standardisation). Its penalty is chosen inside the fold, by the exact leave-one-out error
on the fold's training part (``ALPHAS``), so the fold's validation rows never choose it. It is written in torch
rather than calling sklearn because one eigendecomposition serves every penalty (3x faster on a 384-wide layer).
The result is every validation row's probe correctness per candidate, out of fold: what a paired test between
candidates needs (``studies.trials.racing``).

A ridge probe is a linear read-out: seconds per layer on a CPU, against minutes of MLP epochs. It tracks the MLP's
curve over depth closely but not exactly, which is why the rule that drops candidates on it is loose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lightning_modules.datamodule import CachedFeatureDataModule

ALPHAS = np.logspace(-1, 5, 7)  # ridge penalties tried inside each fold (features are standardised: unit scale)


@dataclass(frozen=True)
class ProbeScores:
    """Out-of-fold probe correctness of each candidate.

    Attributes:
        correct: ``(candidates, rows)`` 1.0 where the fold's probe classified the row right; rows are every fold's
            validation rows, fold after fold.
        alphas: ``(candidates, folds)`` the penalty each fold chose.
    """

    correct: np.ndarray
    alphas: np.ndarray

    @property
    def acc(self) -> np.ndarray:
        """Probe accuracy of each candidate over all validation rows ``(candidates,)``."""
        return np.asarray(self.correct.mean(axis=1))


def _split(dm: CachedFeatureDataModule, split: str, source: int) -> tuple[np.ndarray, np.ndarray]:
    data = dm.datasets[split]
    xs, y = data.batch(np.arange(len(data)), which=[source])
    return xs[0].numpy(), y.numpy()


def ridge_loo(x: torch.Tensor, y: np.ndarray, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Ridge regression of one-hot (+-1) targets on ``x``; its penalty is the ``ALPHAS`` value of least LOO error.

    ``x`` is centred (the train part's standardisation), so the intercept is the targets' mean. With the
    eigendecomposition ``x'x = V diag(s) V'`` every penalty's fit and its exact leave-one-out residuals
    ``(y_i - yhat_i) / (1 - h_ii)`` cost one ``(n, d)`` product each (Golub, Heath & Wahba 1979; sklearn's
    ``RidgeCV`` computes the same criterion).

    Returns:
        The weights ``(d, C)``, the intercept ``(C,)`` and the penalty chosen.
    """
    x = x.double()
    targets = -torch.ones(len(y), num_classes, dtype=torch.float64)
    targets[torch.arange(len(y)), torch.from_numpy(y)] = 1.0
    intercept = targets.mean(dim=0)
    yc = targets - intercept
    s, v = torch.linalg.eigh(x.T @ x)
    s = s.clamp(min=0.0)
    u = x @ v  # (n, d)
    q = u.T @ yc  # (d, C)
    u2 = u.square()
    best: tuple[float, float] = (math.inf, float(ALPHAS[0]))
    for alpha in ALPHAS:
        inv = 1.0 / (s + alpha)
        fitted = u @ (q * inv[:, None])
        hat = u2 @ inv + 1.0 / len(y)  # leverage, the intercept's 1/n included
        loo = ((yc - fitted) / (1.0 - hat)[:, None]).square().mean().item()
        best = min(best, (loo, float(alpha)))
    alpha = best[1]
    weights = v @ (q / (s + alpha)[:, None])
    return weights, intercept, alpha


def probe_fold(dm: CachedFeatureDataModule, source: int) -> tuple[np.ndarray, float]:
    """Fit the ridge probe of input ``source`` on ``dm``'s training part; its validation correctness and penalty."""
    x, y = _split(dm, "train", source)
    xv, yv = _split(dm, "val", source)
    weights, intercept, alpha = ridge_loo(torch.from_numpy(x), y, dm.num_classes)
    pred = (torch.from_numpy(xv).double() @ weights + intercept).argmax(dim=1).numpy()
    return (pred == yv).astype(np.float64), alpha


def probe_candidates(dms: Sequence[CachedFeatureDataModule], sources: Sequence[int]) -> ProbeScores:
    """Probe each input in ``sources`` (indices of the data modules' selections) on every fold's data module."""
    correct, alphas = [], []
    for source in sources:
        per_fold = [probe_fold(dm, source) for dm in dms]
        correct.append(np.concatenate([c for c, _ in per_fold]))
        alphas.append([a for _, a in per_fold])
    return ProbeScores(np.array(correct), np.array(alphas))
