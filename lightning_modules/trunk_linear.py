"""Linear layers of a vmapped trunk whose weight gradients arrive in the weights' own layout.

Under ``torch.func.vmap``, autograd through ``F.linear`` computes a stacked weight's gradient as ``(x^T g)^T``:
a transposed ``(n, in, out)`` result that ``AccumulateGrad`` copies into the leaf's ``(n, out, in)`` layout, and
its GEMM reads a transposed activation. ``_Linear`` computes ``g^T x`` straight into ``(out, in)``, as
``F.linear``'s own backward does outside vmap (and ``BatchedHeads`` for the MLP heads). The forward pass is
``F.linear``'s bit for bit; the gradients are the same sums with the GEMM's operands swapped, bit-equal on the AMD
CPUs measured and equal to float rounding wherever a BLAS orders them otherwise (tests/lightning_modules/
test_trunk_linear.py). A ``moe`` fusion fit of 15 units took 0.742x the wall time (BENCHMARKS.md, "Trunk weight
gradients").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


class _Linear(torch.autograd.Function):
    """``x W^T + b`` with the weight gradient ``g^T x`` (vmap rule generated from these per-unit formulas)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        out = x @ w.t()  # the GEMM vmap makes of F.linear, so the values are F.linear's
        return out if b is None else out + b

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
        x, w, b = inputs
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])  # (B, out)
        grad_x = grad @ w if ctx.needs_input_grad[0] else None  # none for the cached features
        grad_w = rows.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None  # (out, in)
        grad_b = rows.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out: Tensor = _Linear.apply(x, weight, bias)  # type: ignore[no-untyped-call]
    return out


class _LinearMode(TorchFunctionMode):
    """Routes ``F.linear`` to ``_Linear`` while gradients are recorded in full precision.

    Evaluation keeps ``F.linear`` itself, and so does mixed precision: autocast casts ``F.linear``'s bias with its
    inputs, where ``_Linear``'s ``+ b`` would promote the bf16 product back to float32.
    """

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear and torch.is_grad_enabled() and not torch.is_autocast_enabled(args[0].device.type):
            return _linear(*args, **kwargs)
        return func(*args, **kwargs)


@contextmanager
def weight_grads_in_layout() -> Iterator[None]:
    """Inside a vmapped trunk's forward pass: its ``nn.Linear`` layers get ``_Linear``'s backward."""
    with _LinearMode():
        yield
