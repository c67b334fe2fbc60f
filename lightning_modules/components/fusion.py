"""Every fusion of the paper (Sec. 3.2) behind one registry, ``FUSIONS``, plus the ``residual:<name>`` form.

Contract (STYLE G5): a fusion is built as ``cls(d, k, options)``, its ``forward(xs)`` takes a list of k
tensors ``(B, d)`` and returns ``(B, cls.out_dim(d, k))``, and k = 1 always works. Constraints on d are
checked in ``__init__`` and raise ``FusionConfigError`` naming the value and the fix. Build fusions by name
with ``build_fusion``, which also understands ``residual:<name>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from benchmark.core.errors import UserError
from benchmark.core.registry import Registry
from lightning_modules.fusion_index import FUSION_LINES, RESIDUAL_PREFIX


class FusionConfigError(UserError, ValueError):
    """A fusion that cannot be built for the given size or name."""


@dataclass(frozen=True, slots=True)
class FusionOptions:
    """Options some fusions read; the others ignore them.

    Attributes:
        num_experts: ``moe`` experts; 0 = one expert per input.
    """

    num_experts: int = 0


class Fusion(nn.Module):
    """Base class: ``k`` inputs of shape ``(B, d)`` to one ``(B, out_dim(d, k))`` tensor."""

    needs_projection: ClassVar[bool] = True  # False: the fusion also accepts raw inputs of different widths
    in_all: ClassVar[bool] = True  # part of the ``all`` fusion

    def __init__(self, d: int, k: int, options: FusionOptions = FusionOptions()) -> None:
        super().__init__()
        if d < 1 or k < 1:
            raise FusionConfigError(f"{type(self).__name__} needs d >= 1 and k >= 1 inputs, got d={d}, k={k}")
        self.d = d
        self.k = k

    @staticmethod
    def out_dim(d: int, k: int) -> int:
        """Output width for k inputs of width d."""
        return d

    @classmethod
    def fused_width(cls, input_dims: list[int]) -> int:
        """Output width for inputs of the given widths (all equal to d unless ``needs_projection`` is False)."""
        return cls.out_dim(input_dims[0], len(input_dims))

    def forward(self, xs: list[Tensor]) -> Tensor:  # pragma: no cover - abstract
        """Fuse ``k`` tensors ``(B, d)``."""
        raise NotImplementedError


FUSIONS: Registry[type[Fusion]] = Registry("fusion")


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Eq. 1: ``[x_1 || ... || x_k]``, width ``sum_i d_i`` (``k * d`` after projection).

    The only fusion that does not need a common size, so plain concat skips the projection.
    """

    needs_projection = False

    @staticmethod
    def out_dim(d: int, k: int) -> int:
        """``k * d``."""
        return d * k

    @classmethod
    def fused_width(cls, input_dims: list[int]) -> int:
        """``sum(input_dims)``."""
        return sum(input_dims)

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d_i) -> (B, sum d_i)``."""
        return torch.cat(xs, dim=-1)


@FUSIONS.register("sum")
class SumFusion(Fusion):
    """Eq. 2: ``sum_i x_i``, width d."""

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, d)``."""
        return torch.stack(xs).sum(dim=0)  # (B, d)


@FUSIONS.register("hadamard")
class HadamardFusion(Fusion):
    """Element-wise product ``x_1 * ... * x_k``, width d."""

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, d)``."""
        out = xs[0]
        for x in xs[1:]:
            out = out * x  # (B, d)
        return out


@FUSIONS.register("matmul")
class MatmulFusion(Fusion):
    """Eq. 3: reshape each input to ``s x s`` (``s = sqrt(d)``), multiply left to right, flatten; width d.

    ``M = X_1 X_2 ... X_k / s^(k-1)``. The ``1/s`` per product is our choice (the paper writes none): an
    entry of ``X_1 X_2`` sums s products, so without it the scale grows ~s-fold per extra input (32^3 for
    four inputs at d = 1024) and saturates the head at initialisation. k = 1 returns the input unchanged.

    Raises:
        FusionConfigError: d is not a perfect square.
    """

    def __init__(self, d: int, k: int, options: FusionOptions = FusionOptions()) -> None:
        super().__init__(d, k, options)
        s = math.isqrt(d)
        if s * s != d:
            lo, hi = s * s, (s + 1) ** 2
            raise FusionConfigError(
                f"fusion 'matmul' needs a square size d, got d={d}: set train.proj_dim to a square such as {lo} "
                f"({s}^2) or {hi} ({s + 1}^2)"
            )
        self.side = s

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, d)``."""
        b, s = xs[0].shape[0], self.side
        out = xs[0].reshape(b, s, s)  # (B, s, s)
        for x in xs[1:]:
            out = torch.bmm(out, x.reshape(b, s, s)) / s  # (B, s, s)
        return out.reshape(b, s * s)  # (B, d)


Quaternion = tuple[Tensor, Tensor, Tensor, Tensor]


def quarters(x: Tensor) -> Quaternion:
    """Split ``(B, d)`` into its four quaternion components ``(B, d/4)`` each."""
    r, i, j, k = x.chunk(4, dim=-1)
    return r, i, j, k


def hamilton(p: Quaternion, q: Quaternion) -> Quaternion:
    """Hamilton product of quaternions ``p = (a1, b1, c1, d1)`` and ``q = (a2, b2, c2, d2)``, component-wise."""
    a1, b1, c1, d1 = p
    a2, b2, c2, d2 = q
    return (
        a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
    )


@FUSIONS.register("quaternion")
class QuaternionFusion(Fusion):
    """Each input is ``d/4`` quaternions ``r + i x + j y + k z`` (its four consecutive quarters).

    Output ``q_1 ⊗ q_2 ⊗ ... ⊗ q_k`` (Hamilton product, chained left to right; not commutative), flattened
    back to the same quarter layout; width d. k = 1 returns the input unchanged.

    Raises:
        FusionConfigError: d is not divisible by 4.
    """

    def __init__(self, d: int, k: int, options: FusionOptions = FusionOptions()) -> None:
        super().__init__(d, k, options)
        if d % 4:
            raise FusionConfigError(
                f"fusion 'quaternion' needs d divisible by 4, got d={d}: set train.proj_dim to e.g. {d - d % 4 or 4} "
                f"or {d + 4 - d % 4}"
            )

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, d)``."""
        q = quarters(xs[0])  # 4 x (B, d/4)
        for x in xs[1:]:
            q = hamilton(q, quarters(x))
        return torch.cat(q, dim=-1)  # (B, d)


@FUSIONS.register("moe")
class MoEFusion(Fusion):
    """Mixture of experts: ``sum_e g_e(x) * expert_e(.)`` with a softmax gate over ``[x_1 || ... || x_k]``.

    Default (``options.num_experts == 0``): one expert per input, ``expert_i = ReLU(W_i x_i + b_i)`` sees only
    its own model, as in the paper ("embeddings from each model are processed through different experts").
    With ``num_experts = E > 0``: E experts ``ReLU(W_e [x_1||...||x_k] + b_e)`` all see every input. Width d.
    """

    def __init__(self, d: int, k: int, options: FusionOptions = FusionOptions()) -> None:
        super().__init__(d, k, options)
        if options.num_experts < 0:
            raise FusionConfigError(f"train.moe_experts={options.num_experts} must be >= 0 (0 = one expert per input)")
        self.per_input = options.num_experts == 0
        num = k if self.per_input else options.num_experts
        self.gate = nn.Linear(k * d, num)
        self.experts = nn.ModuleList(nn.Linear(d if self.per_input else k * d, d) for _ in range(num))

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, d)``."""
        joined = torch.cat(xs, dim=-1)  # (B, k d)
        logits: Tensor = self.gate(joined)
        gate = logits.softmax(dim=-1)  # (B, E)
        inputs = xs if self.per_input else [joined] * len(self.experts)
        outs = torch.stack([e(x).relu() for e, x in zip(self.experts, inputs, strict=True)], dim=1)  # (B, E, d)
        return (gate.unsqueeze(-1) * outs).sum(dim=1)  # (B, d)


def all_members() -> list[str]:
    """Fusions joined by ``all``: every registered fusion with ``in_all`` (all but ``all`` itself)."""
    return [name for name, cls in FUSIONS.items() if cls.in_all]


@FUSIONS.register("all")
class AllFusion(Fusion):
    """Every other fusion applied to the same projected inputs, outputs concatenated (paper: "All Methods").

    Width ``sum`` of the members' widths (``(k + 5) d`` with the six base fusions); d must satisfy every
    member's constraint (a square divisible by 4, e.g. 1024, 576, 256, 64).
    """

    in_all = False

    def __init__(self, d: int, k: int, options: FusionOptions = FusionOptions()) -> None:
        super().__init__(d, k, options)
        self.parts = nn.ModuleDict({name: FUSIONS.get(name)(d, k, options) for name in all_members()})

    @staticmethod
    def out_dim(d: int, k: int) -> int:
        """Sum of the members' widths."""
        return sum(FUSIONS.get(name).out_dim(d, k) for name in all_members())

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, out_dim(d, k))``."""
        return torch.cat([part(xs) for part in self.parts.values()], dim=-1)


if set(FUSIONS.names()) != set(FUSION_LINES):  # the torch-free index (listing, early refusals) must name these
    raise RuntimeError(f"lightning_modules.fusion_index lists {sorted(FUSION_LINES)}, the registry {FUSIONS.names()}")


class ResidualFusion(Fusion):
    """``residual:<name>``: ``inner(xs) + R(mean_i x_i)`` (paper: "Residually Enhanced Fusion").

    The residual branch is the mean of the projected inputs, so the original (projected) embeddings reach
    the head unchanged; ``R`` is the identity when the inner fusion keeps width d, else a learned bias-free
    ``Linear(d, out)`` (concat, all). Width: the inner fusion's.
    """

    def __init__(self, inner: Fusion, d: int, k: int) -> None:
        super().__init__(d, k)
        self.inner = inner
        out = type(inner).out_dim(d, k)
        self.skip: nn.Module = nn.Identity() if out == d else nn.Linear(d, out, bias=False)

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, d) -> (B, inner out)``."""
        inner: Tensor = self.inner(xs)
        skip: Tensor = self.skip(torch.stack(xs).mean(dim=0))
        return inner + skip  # (B, out)


def _split_name(name: str) -> tuple[type[Fusion], bool]:
    residual = name.startswith(RESIDUAL_PREFIX)
    base = name[len(RESIDUAL_PREFIX) :] if residual else name
    if base.startswith(RESIDUAL_PREFIX):
        raise FusionConfigError(
            f"fusion '{name}' nests residual twice; use '{RESIDUAL_PREFIX}{base[len(RESIDUAL_PREFIX) :]}'"
        )
    return FUSIONS.get(base), residual


def needs_projection(name: str) -> bool:
    """Whether fusion ``name`` needs every input projected to a common d (all but plain concat)."""
    cls, residual = _split_name(name)
    return residual or cls.needs_projection


def fused_width(name: str, input_dims: list[int]) -> int:
    """Width of fusion ``name``'s output for inputs of the given widths (already projected where needed)."""
    cls, _ = _split_name(name)
    return cls.fused_width(input_dims)


def build_fusion(name: str, d: int, k: int, options: FusionOptions = FusionOptions()) -> Fusion:
    """Build fusion ``name`` (a registry name or ``residual:<name>``) for k inputs of width d.

    Raises:
        UnknownNameError: unknown name, with a suggestion and the valid names.
        FusionConfigError: d does not suit the fusion.
    """
    cls, residual = _split_name(name)
    fusion = cls(d, k, options)
    return ResidualFusion(fusion, d, k) if residual else fusion
