"""Fusion registry (every variant, k = 1..4, several d), projection and MLP head components."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.core.registry import UnknownNameError
from lightning_modules.components.classifier import MLPHead
from lightning_modules.components.fusion import (
    FUSIONS,
    AllFusion,
    FusionConfigError,
    FusionOptions,
    build_fusion,
    fused_width,
    hamilton,
    needs_projection,
)
from lightning_modules.components.projection import Projection, common_dim
from lightning_modules.fusion_index import fusion_names

ALL_NAMES = fusion_names()
DIMS = (4, 16, 36, 64)  # squares divisible by 4: every fusion accepts them


def test_registry_holds_every_paper_fusion() -> None:
    assert FUSIONS.names() == ["all", "concat", "hadamard", "matmul", "moe", "quaternion", "sum"]
    assert ALL_NAMES == FUSIONS.names() + [f"residual:{n}" for n in FUSIONS.names()]


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("d", DIMS)
def test_output_shape_matches_out_dim(name: str, k: int, d: int) -> None:
    fusion = build_fusion(name, d, k)
    xs = [torch.randn(5, d) for _ in range(k)]
    out = fusion(xs)
    assert out.shape == (5, fused_width(name, [d] * k))
    if not name.startswith("residual:"):
        assert out.shape[1] == FUSIONS.get(name).out_dim(d, k)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_gradients_reach_every_input(name: str, k: int) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, 16, k, FusionOptions())
    xs = [torch.randn(3, 16, requires_grad=True) for _ in range(k)]
    fusion(xs).square().sum().backward()
    for i, x in enumerate(xs):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient to input {i}"
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: parameter {pname} got no gradient"


@pytest.mark.parametrize("name", ["matmul", "residual:matmul", "all"])
@pytest.mark.parametrize("d", [8, 1000])
def test_matmul_rejects_non_square_d(name: str, d: int) -> None:
    s = math.isqrt(d)
    with pytest.raises(FusionConfigError, match=rf"d={d}.*train\.proj_dim.*{s * s}.*{(s + 1) ** 2}"):
        build_fusion(name, d, 2)


@pytest.mark.parametrize("name", ["quaternion", "residual:quaternion", "all"])
def test_quaternion_rejects_d_not_divisible_by_4(name: str) -> None:
    with pytest.raises(FusionConfigError, match=r"quaternion.*d=9.*train\.proj_dim"):
        build_fusion(name, 9, 2)


def test_unknown_and_nested_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'hadamard'"):
        build_fusion("hadamrd", 16, 2)
    with pytest.raises(UnknownNameError, match="Valid fusions: all, concat"):
        build_fusion("residual:nope", 16, 2)
    with pytest.raises(FusionConfigError, match="nests residual twice"):
        build_fusion("residual:residual:sum", 16, 2)


@pytest.mark.parametrize("name", ["concat", "sum", "hadamard", "matmul", "quaternion"])
def test_single_input_is_identity(name: str) -> None:
    x = torch.randn(4, 16)
    torch.testing.assert_close(build_fusion(name, 16, 1)([x]), x)


def test_math_of_parameter_free_fusions() -> None:
    a, b, c = (torch.randn(2, 16) for _ in range(3))
    torch.testing.assert_close(build_fusion("concat", 16, 2)([a, b]), torch.cat([a, b], 1))
    torch.testing.assert_close(build_fusion("sum", 16, 3)([a, b, c]), a + b + c)
    torch.testing.assert_close(build_fusion("hadamard", 16, 3)([a, b, c]), a * b * c)
    expect = (a.view(2, 4, 4) @ b.view(2, 4, 4) / 4 @ c.view(2, 4, 4) / 4).reshape(2, 16)
    torch.testing.assert_close(build_fusion("matmul", 16, 3)([a, b, c]), expect)


def test_quaternion_is_the_hamilton_product() -> None:
    # i * j = k and j * i = -k, component layout (r | i | j | k) per quarter.
    i = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    j = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    q = build_fusion("quaternion", 4, 2)
    torch.testing.assert_close(q([i, j]), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(q([j, i]), torch.tensor([[0.0, 0.0, 0.0, -1.0]]))
    # Norm is multiplicative for unit quaternions, also chained over three inputs.
    xs = [torch.nn.functional.normalize(torch.randn(3, 4), dim=1) for _ in range(3)]
    out = build_fusion("quaternion", 4, 3)(xs)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    p = tuple(torch.randn(1, 1) for _ in range(4))
    assert all(
        torch.equal(u, v) for u, v in zip(hamilton(p, (torch.ones(1, 1), *(torch.zeros(1, 1),) * 3)), p, strict=True)
    )  # type: ignore[arg-type]


def test_moe_gate_weights_experts() -> None:
    per_input = build_fusion("moe", 8, 3)
    assert len(per_input.experts) == 3 and per_input.experts[0].in_features == 8
    dense = build_fusion("moe", 8, 3, FusionOptions(num_experts=5))
    assert len(dense.experts) == 5 and dense.experts[0].in_features == 24 and dense.gate.out_features == 5
    # With a constant gate the output is the plain average of the experts.
    with torch.no_grad():
        per_input.gate.weight.zero_()
        per_input.gate.bias.zero_()
    xs = [torch.randn(2, 8) for _ in range(3)]
    expect = torch.stack([e(x).relu() for e, x in zip(per_input.experts, xs, strict=True)]).mean(0)
    torch.testing.assert_close(per_input(xs), expect)
    with pytest.raises(FusionConfigError, match="moe_experts=-1"):
        build_fusion("moe", 8, 2, FusionOptions(num_experts=-1))


def test_all_joins_every_other_fusion() -> None:
    fusion = build_fusion("all", 16, 2)
    assert isinstance(fusion, AllFusion)
    assert list(fusion.parts) == ["concat", "hadamard", "matmul", "moe", "quaternion", "sum"]
    assert AllFusion.out_dim(16, 2) == 16 * 2 + 5 * 16
    a, b = torch.randn(2, 16), torch.randn(2, 16)
    out = fusion([a, b])
    torch.testing.assert_close(out[:, :32], torch.cat([a, b], 1))
    torch.testing.assert_close(out[:, -16:], a + b)


def test_residual_adds_mean_of_inputs() -> None:
    a, b = torch.randn(2, 16), torch.randn(2, 16)
    torch.testing.assert_close(build_fusion("residual:hadamard", 16, 2)([a, b]), a * b + (a + b) / 2)
    res_cat = build_fusion("residual:concat", 16, 2)
    torch.testing.assert_close(res_cat([a, b]), torch.cat([a, b], 1) + res_cat.skip((a + b) / 2))


def test_projection_needs_and_widths() -> None:
    assert not needs_projection("concat")
    assert all(needs_projection(n) for n in ALL_NAMES if n != "concat")
    assert fused_width("concat", [384, 576]) == 960
    assert common_dim([384, 576], 0) == 384 and common_dim([384, 576], 1024) == 1024
    out = Projection(7, 5)(torch.randn(3, 7))
    assert out.shape == (3, 5) and (out >= 0).all()


def test_head_init_and_dropout_are_functions_of_seed() -> None:
    torch.manual_seed(123)
    h1 = MLPHead(8, (16, 4), 3, dropout=0.5, seed=7)
    torch.manual_seed(999)
    h2 = MLPHead(8, (16, 4), 3, dropout=0.5, seed=7)
    for p, q in zip(h1.parameters(), h2.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    x = torch.randn(6, 8)
    torch.manual_seed(1)
    y1 = h1(x)
    torch.manual_seed(2)
    y2 = h2(x)
    torch.testing.assert_close(y1, y2)  # same masks despite different global RNG
    assert not torch.allclose(h1(x), y1)  # the generator moves on: a new mask next step
    h1.eval()
    torch.testing.assert_close(h1(x), h1(x))
    assert MLPHead(8, (), 3, 0.1, 0)(x).shape == (6, 3)
