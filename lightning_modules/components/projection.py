"""Per-model projection to the common fusion size d (paper Sec. 3.2: ``f(E) = ReLU(W E + b)``)."""

from __future__ import annotations

from torch import Tensor, nn


class Projection(nn.Module):
    """``ReLU(W E + b)``: maps one model's ``(B, in_dim)`` features to ``(B, out_dim)``.

    Args:
        in_dim: Width of the model's features.
        out_dim: The common size d shared by every input of a fusion.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        out: Tensor = self.linear(x)
        return out.relu()  # (B, d)


def common_dim(input_dims: list[int], proj_dim: int) -> int:
    """The fusion size d: ``proj_dim``, or the smallest input width when ``proj_dim`` is 0 (the paper's choice)."""
    return proj_dim if proj_dim > 0 else min(input_dims)
