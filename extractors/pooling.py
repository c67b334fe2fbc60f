"""``POOLINGS``: hidden states (..., B, T, H) + attention mask (B, T) -> sentence vectors (..., B, H).

Every pooling is mask-aware and correct for left and right padding, and works on a stack of layers
(leading dims) so one call pools all L+1 hidden states. Accumulation happens in float32.
Torch is imported in the functions, so listing or checking pooling names (``layerfuse ls poolings``, a misspelt
``--pooling``) stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from benchmark.core.registry import Registry

if TYPE_CHECKING:
    import torch

Pooling = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
POOLINGS: Registry[Pooling] = Registry("pooling")


def _gather_position(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick position ``index[b]`` of every row: hidden (..., B, T, H), index (B,) -> (..., B, H)."""
    import torch

    b = torch.arange(hidden.shape[-3], device=hidden.device)
    return hidden[..., b, index, :].float()


@POOLINGS.register("mean")
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the non-padding token states; a row with no tokens gives zeros."""
    import torch

    m = mask.to(hidden.dtype).unsqueeze(-2)  # (B, 1, T)
    # A batched (1, T) @ (T, H) product sums the real tokens without materialising a masked copy of h.
    total = (m @ hidden).squeeze(-2).float()  # (..., B, H)
    return total / mask.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)


@POOLINGS.register("max")
def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over non-padding tokens; a row with no tokens gives zeros."""
    import torch

    m = mask.bool().unsqueeze(-1)  # (B, T, 1)
    out = hidden.float().masked_fill(~m, float("-inf")).amax(-2)  # (..., B, H)
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)


@POOLINGS.register("cls")
def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the first non-padding token (BERT's [CLS] under right padding, also right under left padding)."""
    import torch

    first = mask.to(torch.int64).argmax(-1)  # (B,) first 1
    return _gather_position(hidden, first)


@POOLINGS.register("last_token")
def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the last non-padding token: the only position a causal decoder lets see the whole text."""
    import torch

    t = mask.shape[-1]
    last = t - 1 - mask.to(torch.int64).flip(-1).argmax(-1)  # (B,) last 1
    return _gather_position(hidden, last)
