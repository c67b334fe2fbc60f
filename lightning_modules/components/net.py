"""``FusionNet``: the classifier's forward pass as a plain ``nn.Module`` (projections, fusion, MLP head).

Every head the engine trains starts as a ``FusionNet`` (``lightning_modules.fit.build_net``) and its trained
weights are written back into one; an exported model rebuilds it from the same hyper-parameters and loads them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_modules.components.classifier import MLPHead
from lightning_modules.components.fusion import FusionOptions, build_fusion, fused_width, needs_projection
from lightning_modules.components.projection import Projection, common_dim


class FusionNet(nn.Module):
    """``head(fusion([proj_1(x_1), ..., proj_k(x_k)]))``: k feature inputs to class logits.

    Args:
        input_dims: Width of each input, in selection order.
        num_classes: Number of labels.
        fusion: A name from ``FUSIONS`` or ``residual:<name>``.
        proj_dim: Common size d; 0 = the smallest input width.
        hidden_dims: MLP head hidden sizes.
        dropout: MLP head dropout.
        moe_experts: Experts of the ``moe`` fusion (0 = one per input).
        seed: Seed of the head's initial weights and dropout masks.
    """

    def __init__(
        self,
        input_dims: Sequence[int],
        num_classes: int,
        fusion: str = "concat",
        proj_dim: int = 1024,
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        moe_experts: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        dims = list(input_dims)
        if needs_projection(fusion):
            d = common_dim(dims, proj_dim)
            self.projections = nn.ModuleList(Projection(h, d) for h in dims)
            dims = [d] * len(dims)
        else:
            self.projections = nn.ModuleList()
        self.fusion = build_fusion(fusion, dims[0], len(dims), FusionOptions(num_experts=moe_experts))
        self.fused_dim = fused_width(fusion, dims)
        self.head = MLPHead(self.fused_dim, hidden_dims, num_classes, dropout, seed)

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, H_i) -> (B, C)`` logits."""
        if self.projections:
            xs = [proj(x) for proj, x in zip(self.projections, xs, strict=True)]  # k x (B, d)
        out: Tensor = self.head(self.fusion(xs))  # (B, C)
        return out
