"""``BatchedHeads``: many MLP heads of one shape trained as stacked tensors, each step equal to each head's own fit.

The layer sweep stacks one head per layer; cross-validation adds one per (fold, seed) unit. Every head keeps
its own initial weights (``MLPHead`` seeded by its seed), its own dropout masks and its own Adam moments.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from lightning_modules.components.classifier import MLPHead, apply_dropout, dropout_seed, make_adam


class _BatchedLinear(torch.autograd.Function):
    """``baddbmm(b, x, W^T)`` for weights in ``nn.Linear``'s ``(n, out, in)`` layout, with its backward by hand.

    The values are those of autograd through the transposed view (so of ``F.linear``), but the weight
    gradient is computed as ``grad^T @ x`` straight into the ``(out, in)`` layout, as ``F.linear``'s own
    backward does; through the view, autograd made it ``(in, out)`` and copied it over (measured: +8 ms
    of a 35 ms step at 31 x 576 -> 256).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b, x, w.transpose(1, 2))  # (n, B, out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, w = ctx.saved_tensors
        grad_x = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None  # (n, B, in); not for the features
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(dim=1, keepdim=True)


Param = Tensor | list[Tensor]  # one stacked leaf (n, ...) or one leaf per head
VECTOR_UNIT = 16  # floats per 64-byte unit of torch's fused CPU Adam; its SIMD width (8 or 16) divides it


class BatchedHeads:
    """The MLP heads of several layers as stacked tensors ``W_j (n, out, in)``, ``b_j (n, 1, out)``.

    Weights keep ``nn.Linear``'s ``(out, in)`` layout and enter the GEMM transposed, as ``F.linear``
    feeds them (``_BatchedLinear``): with the ``(in, out)`` layout the 256 -> 2 output layer rounds differently
    from a single fit's (measured: ~1e-6 per logit, which moved some layers' early stopping on real features).

    Fused Adam updates whole SIMD vectors with an FMA and a tensor's tail element by element without one,
    so an element's rounding depends on where it sits. A per-head tensor whose size is a multiple of
    ``VECTOR_UNIT`` is stacked (each head's elements fill whole vectors, as in its own fit); a smaller or
    ragged one (the 2-class output bias) stays one leaf per head, stacked only for the forward pass.

    Heads of one seed share one dropout generator: each head's own fit would draw the same masks from it in
    lockstep, so one ``(B, h)`` draw per seed and step serves all heads of that seed (with one seed, as in a
    layer sweep, it is broadcast over every head). Heads of different seeds (the units of cross-validation)
    get their own seed's draw, so the batched step stays equal to each head's own fit.
    """

    def __init__(self, heads: list[MLPHead], device: torch.device) -> None:
        self.dropout = heads[0].dropout
        n_lin = len(heads[0].linears)
        linears = [[cast(nn.Linear, h.linears[j]) for j in range(n_lin)] for h in heads]
        self.weights = [self._param([lin[j].weight.detach() for lin in linears], device) for j in range(n_lin)]
        self.biases = [self._param([lin[j].bias.detach()[None] for lin in linears], device) for j in range(n_lin)]
        self.seeds = [h.seed for h in heads]
        self.rngs = {s: np.random.default_rng(dropout_seed(s)) for s in dict.fromkeys(self.seeds)}
        self._index_seeds()

    def _index_seeds(self) -> None:
        """Map each head to its seed's draw (the seeds of the heads still training, in first-seen order)."""
        order = list(dict.fromkeys(self.seeds))
        self._live = [self.rngs[s] for s in order]
        self._seed_pos = torch.tensor([order.index(s) for s in self.seeds], dtype=torch.long)

    def _uniform(self, shape: tuple[int, ...]) -> Tensor:
        """One draw of ``shape`` = ``(B, h)`` per live seed: ``(B, h)`` for one seed, else ``(n, B, h)`` per head."""
        draws = [torch.from_numpy(rng.random(shape, dtype=np.float32)) for rng in self._live]  # the draws MLPHead makes
        return draws[0] if len(draws) == 1 else torch.stack(draws)[self._seed_pos]

    @staticmethod
    def _param(parts: list[Tensor], device: torch.device) -> Param:
        if parts[0].numel() % VECTOR_UNIT == 0:
            return torch.stack(parts).to(device).requires_grad_(True)
        return [part.to(device).clone().requires_grad_(True) for part in parts]

    @staticmethod
    def _full(p: Param) -> Tensor:
        return p if isinstance(p, Tensor) else torch.stack(p)

    def parameters(self) -> list[Tensor]:
        """All leaf tensors (weights then biases)."""
        return [leaf for p in (*self.weights, *self.biases) for leaf in ([p] if isinstance(p, Tensor) else p)]

    def forward(self, x: Tensor, train: bool) -> Tensor:
        """``(n, B, H) -> (n, B, C)`` logits; when training, one dropout draw ``(B, h)`` per hidden layer and seed."""
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            # torch leaves autograd.Function.apply unannotated
            x = _BatchedLinear.apply(x, self._full(w), self._full(b))  # type: ignore[no-untyped-call]  # (n, B, out)
            if j < len(self.weights) - 1:
                x = x.relu()
                if train and self.dropout > 0:
                    x = apply_dropout(x, self._uniform(tuple(x.shape[1:])), self.dropout)  # (B, h) or (n, B, h) mask
        return x

    def keep(self, idx: list[int], optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Keep heads ``idx`` only (parameters and Adam moments); return the new optimizer."""
        moved: dict[Tensor, dict[str, Tensor]] = {}

        def select(p: Param) -> Param:
            if not isinstance(p, Tensor):
                kept = [p[i] for i in idx]
                moved.update({leaf: optimizer.state[leaf] for leaf in kept if leaf in optimizer.state})
                return kept
            new = p.detach()[idx].clone().requires_grad_(True)
            if st := optimizer.state.get(p):
                moved[new] = {
                    "step": st["step"].clone(),
                    "exp_avg": st["exp_avg"][idx].clone(),
                    "exp_avg_sq": st["exp_avg_sq"][idx].clone(),
                }
            return new

        self.weights, self.biases = [select(w) for w in self.weights], [select(b) for b in self.biases]
        self.seeds = [self.seeds[i] for i in idx]
        self._index_seeds()
        new_opt = make_adam(self.parameters(), optimizer.defaults["lr"], optimizer.defaults["weight_decay"])
        new_opt.state.update(moved)
        return new_opt

    def snapshot(self, i: int) -> list[Tensor]:
        """Copy of head ``i``'s tensors (weights then biases)."""
        return [
            p.detach()[i].clone() if isinstance(p, Tensor) else p[i].detach().clone()
            for p in (*self.weights, *self.biases)
        ]

    def load(self, states: list[list[Tensor]]) -> None:
        """Replace all heads by snapshots (one per head, as ``snapshot`` returns them); for evaluation only."""
        stacked = [torch.stack(parts) for parts in zip(*states, strict=True)]
        n_lin = len(self.weights)
        self.weights, self.biases = list(stacked[:n_lin]), list(stacked[n_lin:])
