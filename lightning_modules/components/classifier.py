"""The MLP classifier head on top of the fused features, with reproducible initialisation and dropout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global torch RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class MLPHead(nn.Module):
    """``Linear -> ReLU -> Dropout`` per hidden size, then ``Linear`` to the class logits.

    Initial weights and dropout masks are pure functions of ``seed`` (own generator, not the global RNG;
    masks are drawn on the CPU and moved, so they do not depend on the device either),
    so a head trained here and the same head inside the batched layer sweep see identical randomness
    whatever else consumed random numbers (data loaders, other modules).

    Args:
        in_dim: Fused feature width.
        hidden_dims: Hidden layer sizes (empty: a linear classifier).
        num_classes: Number of logits.
        dropout: Drop probability after every hidden layer.
        seed: Seed of the initial weights and of the dropout masks.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], num_classes: int, dropout: float, seed: int) -> None:
        super().__init__()
        dims = [in_dim, *hidden_dims, num_classes]
        with seeded(seed):
            self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.dropout = dropout
        self.seed = seed
        self._rng: np.random.Generator | None = None  # dropout draws; numpy's PCG64 is ~3x faster than torch's CPU RNG

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, num_classes)`` logits."""
        for linear in self.linears[:-1]:
            x = linear(x).relu()  # (B, h)
            if self.training and self.dropout > 0:
                if self._rng is None:
                    self._rng = np.random.default_rng(dropout_seed(self.seed))
                x = apply_dropout(x, torch.from_numpy(self._rng.random(tuple(x.shape), dtype=np.float32)), self.dropout)
        logits: Tensor = self.linears[-1](x)
        return logits  # (B, C)


def apply_dropout(x: Tensor, uniform: Tensor, p: float) -> Tensor:
    """Inverted dropout of ``x`` with a mask from ``uniform`` draws in [0, 1) of the same shape (kept where < 1-p).

    The single-head and the batched sweep path both call this, so equal draws give bit-equal outputs.
    """
    keep = 1.0 - p
    return x * ((uniform.to(x.device) < keep).to(x.dtype) / keep)


def make_adam(params: Iterable[Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimiser of every head (paper: Adam).

    The fused kernel makes one pass over each tensor: the update of the default loop without its
    temporaries, which matters for the sweep's stacked weights.
    """
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def dropout_seed(seed: int) -> int:
    """Seed of a head's dropout generator (kept apart from the shuffling seed ``seed``)."""
    return seed + 1
