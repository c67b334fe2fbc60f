"""The MLP classifier head on top of the fused features, with reproducible initialisation and dropout."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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

    Initial weights and dropout masks are pure functions of ``seed`` (own generator, not the global RNG),
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
        self._generator: torch.Generator | None = None

    def drop_mask(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Next inverted-dropout mask (values 0 or ``1/(1-p)``) from the head's own generator."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(dropout_seed(self.seed))
        keep = 1.0 - self.dropout
        return torch.empty(shape, device=device).bernoulli_(keep, generator=self._generator) / keep

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, num_classes)`` logits."""
        for linear in self.linears[:-1]:
            x = linear(x).relu()  # (B, h)
            if self.training and self.dropout > 0:
                x = x * self.drop_mask(tuple(x.shape), x.device)
        return self.linears[-1](x)  # (B, C)


def dropout_seed(seed: int) -> int:
    """Seed of a head's dropout generator (kept apart from the shuffling seed ``seed``)."""
    return seed + 1
