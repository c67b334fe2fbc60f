"""A vmapped trunk's linear layers: F.linear's values, weight gradients born in the weights' layout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from lightning_modules.components.net import FusionNet
from lightning_modules.fusion_index import fusion_names
from lightning_modules.stack import Trunk
from lightning_modules.trunk_linear import weight_grads_in_layout

UNITS, ROWS, WIDTHS, D = 3, 7, (12, 20), 16  # D: a square divisible by 4, so every fusion accepts it


def _trunk_pass(fusion: str, routed: bool) -> tuple[Tensor, dict[str, Tensor], dict[str, bool]]:
    """A vmapped trunk of UNITS seeded nets: (output, each leaf's gradient, whether each arrived contiguous)."""
    torch.manual_seed(0)  # the trunk's initial weights come from the global generator
    trunks = [Trunk(FusionNet(WIDTHS, 3, fusion=fusion, proj_dim=D, seed=s)) for s in range(UNITS)]
    params, buffers = stack_module_state(trunks)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    arrived: dict[str, bool] = {}
    for name, leaf in leaves.items():
        leaf.register_hook(lambda g, name=name: arrived.__setitem__(name, g.is_contiguous()))
    base = copy.deepcopy(trunks[0]).to("meta")

    def one(p: dict[str, Tensor], b: dict[str, Tensor], xs: list[Tensor]) -> Tensor:
        if not routed:
            return functional_call(base, (p, b), (xs,))  # type: ignore[no-any-return]
        with weight_grads_in_layout():
            return functional_call(base, (p, b), (xs,))  # type: ignore[no-any-return]

    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(UNITS, ROWS, w, generator=gen) for w in WIDTHS]
    out = vmap(one)(leaves, buffers, xs)
    (out * torch.randn(out.shape, generator=gen)).sum().backward()  # type: ignore[no-untyped-call]
    return out.detach(), {k: v.grad for k, v in leaves.items() if v.grad is not None}, arrived


@pytest.mark.parametrize("fusion", [f for f in fusion_names() if f != "concat"])  # plain concat has no trunk
def test_values_and_gradients_are_autograds_and_weight_gradients_need_no_copy(fusion: str) -> None:
    out, grads, arrived = _trunk_pass(fusion, routed=True)
    ref_out, ref_grads, ref_arrived = _trunk_pass(fusion, routed=False)
    assert torch.equal(out, ref_out)  # the same GEMM as vmap makes of F.linear
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in grads.items():
        # The same products summed in another operand order: equal on the AMD machines measured, and to
        # float rounding (a few ulp of the largest term) wherever the BLAS kernel orders its sums otherwise.
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6)
    weights = [n for n, g in grads.items() if n.endswith("weight") and g.dim() == 3]
    assert weights and all(arrived[n] for n in weights)
    # Without the routing, autograd's (x^T g)^T arrives transposed and AccumulateGrad copies it.
    assert not any(ref_arrived[n] for n in weights)


def test_evaluation_and_plain_calls_are_left_to_f_linear() -> None:
    x, w, b = torch.randn(5, 4), torch.randn(3, 4), torch.randn(3)
    with torch.no_grad(), weight_grads_in_layout():
        assert torch.equal(F.linear(x, w, b), torch.addmm(b, x, w.t()))  # F.linear's own kernel, not x @ w^T + b
    layer = nn.Linear(4, 3)
    with weight_grads_in_layout():
        out = layer(x)
    assert out.grad_fn is not None and type(out.grad_fn).__name__.startswith("_Linear")
    out.sum().backward()
    assert layer.bias.grad is not None and torch.allclose(layer.bias.grad, torch.full((3,), 5.0))
    assert layer.weight.grad is not None and torch.allclose(layer.weight.grad, x.sum(dim=0).expand(3, 4))


def test_mixed_precision_is_left_to_f_linear_and_its_autocast() -> None:
    x, w, b = (torch.randn(*shape, requires_grad=True) for shape in ((5, 4), (3, 4), (3,)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.linear(x, w, b)
        with weight_grads_in_layout():
            routed = F.linear(x, w, b)
    assert routed.dtype == plain.dtype == torch.bfloat16 and torch.equal(routed, plain)
