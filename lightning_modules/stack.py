"""``UnitStack``: heads of one configuration whose units hold equally many training rows, trained as stacked tensors.

Every head is a ``FusionNet`` (projections, fusion, MLP head) of its own unit (fold, seed) and sources. Heads whose
training parts have equal row counts see batches of one shape at every step, so they train together: the
projections and fusion of all heads as one ``torch.func.vmap`` over stacked parameters, the MLP heads as
``BatchedHeads`` (per-seed dropout masks). Each head keeps what its own single fit would have: its initial
weights, its unit's batches in its seed's order, Adam, early stopping on ``train.monitor`` with ``patience`` and
the best epoch's weights. A plain ``concat`` head has no trunk parameters (single layers of a sweep): its inputs
go straight to the stacked heads, bit-equal to each head's own fit; the vmapped GEMMs of a trunk round
differently from a single fit's, so such heads equal their fits within numerical noise.

Per-head early stopping, best-epoch weights and the shrinking of the stack when a head stops are hand-written:
Lightning's ``EarlyStopping`` and checkpointing watch one scalar of one model, and a stopped head must leave the
stacked tensors (and its Adam moments) to stop costing compute. ``HeadTrack`` applies ``EarlyStopping``'s rule.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_f1_score

from benchmark.core import tracking
from lightning_modules.batched import BatchedHeads
from lightning_modules.callbacks import improved, monitor_mode
from lightning_modules.components.classifier import make_adam
from lightning_modules.components.net import FusionNet
from lightning_modules.features import ShuffledBatchSampler
from lightning_modules.trunk_linear import weight_grads_in_layout
from lightning_modules.unit_rows import UnitRows

Scores = tuple[Tensor, Tensor, Tensor, Tensor]  # per head (loss, acc, macro-F1) and predictions (n, N)


@dataclass
class HeadTrack:
    """One head's early stopping and best epoch, by ``EarlyStopping``'s rule (strict improvement, ``patience``)."""

    mode: str
    patience: int
    best: float | None = None
    best_epoch: int = -1
    epochs: int = 0
    wait: int = 0
    val: tuple[float, float, float] = (float("nan"),) * 3  # (acc, f1, loss) at the best epoch
    state: list[Tensor] = field(default_factory=list)  # weights at the best epoch
    val_pred: Tensor | None = None  # validation predictions at the best epoch

    def end_epoch(self, epoch: int, current: float, val: tuple[float, float, float]) -> tuple[bool, bool]:
        """Record an epoch's monitored value; return (improved, stops)."""
        self.epochs = epoch + 1
        if improved(current, self.best, self.mode):
            self.best, self.best_epoch, self.wait, self.val = current, epoch, 0, val
            return True, False
        self.wait += 1
        return False, bool(self.patience) and self.wait >= self.patience


class Trunk(nn.Module):
    """Projections and fusion of one ``FusionNet`` (the part before its MLP head)."""

    def __init__(self, net: FusionNet) -> None:
        super().__init__()
        self.projections, self.fusion = net.projections, net.fusion

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, H_i) -> (B, D)``."""
        if self.projections:
            xs = [proj(x) for proj, x in zip(self.projections, xs, strict=True)]  # k x (B, d)
        return cast(Tensor, self.fusion(xs))  # (B, D)


class UnitStack:
    """Heads of equally many training rows per unit, trained and evaluated as one stacked model.

    Args:
        nets: Each head's initial ``FusionNet`` (one shape; built by its seed).
        rows: ``train`` (and ``val``, ``test`` when present) batches of the heads, in this order.
        samplers: One per unit of the stack: its training batches in its seed's order.
        lr, weight_decay, monitor, patience: ``train`` settings.
        num_classes: Number of labels.
        eval_batch_size: Rows per validation and test batch (as a single fit evaluates).
    """

    def __init__(
        self,
        nets: list[FusionNet],
        rows: dict[str, UnitRows],
        samplers: list[ShuffledBatchSampler],
        lr: float,
        weight_decay: float,
        monitor: str,
        patience: int,
        num_classes: int,
        eval_batch_size: int,
    ) -> None:
        self.rows, self.samplers, self.c, self.eval_batch_size = rows, samplers, num_classes, eval_batch_size
        self.lr, self.weight_decay, self.monitor = lr, weight_decay, monitor
        device = rows["train"].device
        trunks = [Trunk(n) for n in nets]
        params, buffers = stack_module_state(trunks)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        base = copy.deepcopy(trunks[0]).to("meta")  # the structure only: parameters come from ``params``

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xs: list[Tensor]) -> Tensor:
            with weight_grads_in_layout():
                return functional_call(base, (p, b), (xs,))  # type: ignore[no-any-return]

        self.trunk = vmap(one)
        self.heads = BatchedHeads([n.head for n in nets], device)
        self.trunk_opt = make_adam(list(self.params.values()), lr, weight_decay) if self.params else None
        self.head_opt = make_adam(self.heads.parameters(), lr, weight_decay)
        self.tracks = [HeadTrack(monitor_mode(monitor), patience) for _ in nets]
        self.active = list(range(len(nets)))  # heads still training, in stacking order
        self.curves: list[dict[str, list[float]]] = [{} for _ in nets]
        self.members = list(range(len(nets)))  # the engine's index of each head (set by the engine)

    def tensors(self) -> list[Tensor]:
        """Every parameter tensor of the stack (for device checks)."""
        return [*self.params.values(), *self.heads.parameters()]

    def forward(self, xs: list[Tensor], train: bool) -> Tensor:
        """``k x (n, B, H_j) -> (n, B, C)`` logits of the active heads."""
        if self.params:
            fused = self.trunk(self.params, self.buffers, xs)  # (n, B, D)
        else:  # plain concat: no parameters; one input (a layer sweep) is used as it is, not copied by cat
            fused = xs[0] if len(xs) == 1 else torch.cat(xs, dim=-1)  # (n, B, D)
        return self.heads.forward(fused, train=train)

    def train_epoch(self, backward: Callable[[Tensor], None]) -> None:
        """One epoch of every active head: its unit's batches, one Adam step each; records ``train/loss``."""
        device = self.rows["train"].device
        total, seen = torch.zeros(len(self.active), device=device), 0
        for pos in zip(*self.samplers, strict=True):
            xs, y = self.rows["train"].batch([np.asarray(p) for p in pos])  # k x (n, B, H_j), (n, B)
            logits = self.forward(xs, train=True)  # (n, B, C)
            n = logits.shape[0]
            # Each head's mean loss; their sum gives each head the gradient of its own loss.
            per_head = F.cross_entropy(logits.reshape(-1, self.c), y.reshape(-1), reduction="none").view(n, -1)
            per_head = per_head.mean(dim=1)  # (n,)
            opts = [o for o in (self.trunk_opt, self.head_opt) if o is not None]
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            backward(per_head.sum())
            for opt in opts:
                opt.step()
            total += per_head.detach().float() * y.shape[1]
            seen += y.shape[1]
        for i, loss in zip(self.active, (total / max(seen, 1)).tolist(), strict=True):
            self.curves[i].setdefault(tracking.TRAIN_LOSS, []).append(loss)

    @torch.no_grad()
    def evaluate(self, split: str) -> Scores:
        """Per active head (loss, acc, macro-F1) and predictions over ``split``'s rows in order, as a fit evaluates."""
        rows = self.rows[split]
        losses, preds, targets = [], [], []
        for start in range(0, len(rows), self.eval_batch_size):
            xs, y = rows.chunk(start, min(start + self.eval_batch_size, len(rows)))  # k x (n, B, H_j), (n, B)
            logits = self.forward(xs, train=False).float()  # (n, B, C)
            # One mean-reduced cross-entropy per head, as a single fit computes its batch loss: the same summation
            # (a batched mean over reduction="none" rounds differently and could break a tie in early stopping).
            ce = torch.stack([F.cross_entropy(lg, yi) for lg, yi in zip(logits, y, strict=True)])  # (n,)
            losses.append(ce * y.shape[1])
            preds.append(logits.argmax(dim=-1))
            targets.append(y)
        pred, y = torch.cat(preds, dim=1), torch.cat(targets, dim=1)  # (n, N), (n, N)
        loss = torch.stack(losses).sum(dim=0) / y.shape[1]
        acc = (pred == y).float().mean(dim=1)
        # samplewise over a (heads, N) input: one macro-F1 per head in one call
        f1 = multiclass_f1_score(pred, y, self.c, average="macro", multidim_average="samplewise")
        return loss, acc, f1, pred

    def validate(self, epoch: int) -> Scores:
        """Score validation, record each head's curve and best epoch, and drop the heads that stop."""
        scores = self.evaluate("val")
        loss, acc, f1, pred = scores
        monitored = loss if self.monitor == tracking.VAL_LOSS else acc
        keep = []
        for pos, i in enumerate(self.active):
            self.curves[i].setdefault(tracking.VAL_LOSS, []).append(float(loss[pos]))
            self.curves[i].setdefault(tracking.VAL_ACC, []).append(float(acc[pos]))
            track = self.tracks[i]
            better, stops = track.end_epoch(
                epoch, float(monitored[pos]), (float(acc[pos]), float(f1[pos]), float(loss[pos]))
            )
            if better:
                track.state, track.val_pred = self.snapshot(pos), pred[pos].cpu()
            if not stops:
                keep.append(pos)
        if len(keep) < len(self.active):
            self.keep(keep)
        return scores

    def snapshot(self, pos: int) -> list[Tensor]:
        """Copy of the tensors of the head at stack position ``pos`` (trunk, then MLP weights and biases)."""
        return [p.detach()[pos].clone() for p in self.params.values()] + self.heads.snapshot(pos)

    def keep(self, idx: list[int]) -> None:
        """Keep the heads at positions ``idx`` of the active ones (parameters, Adam moments, rows)."""
        self.active = [self.active[i] for i in idx]
        if not self.active:
            return  # the stack is done: nothing reads its rows or steps its optimizers again
        for split in ("train", "val"):
            if split in self.rows:
                self.rows[split].keep(idx)
        self.head_opt = self.heads.keep(idx, self.head_opt)
        if self.trunk_opt is not None:
            new = {k: p.detach()[idx].clone().requires_grad_(True) for k, p in self.params.items()}
            opt = make_adam(list(new.values()), self.lr, self.weight_decay)
            for old, fresh in zip(self.params.values(), new.values(), strict=True):
                if st := self.trunk_opt.state.get(old):
                    opt.state[fresh] = {
                        "step": st["step"].clone(),
                        "exp_avg": st["exp_avg"][idx].clone(),
                        "exp_avg_sq": st["exp_avg_sq"][idx].clone(),
                    }
            self.params, self.trunk_opt = new, opt

    def final_states(self, restore_best: bool) -> list[list[Tensor]]:
        """Each head's weights to keep: its best epoch's (``restore_best``), else its weights now."""
        if restore_best:
            return [t.state for t in self.tracks]
        return [self.snapshot(pos) for pos in range(len(self.active))]

    def load(self, states: list[list[Tensor]]) -> None:
        """Make every head active with the given weights (for scoring test; no more training)."""
        stacked = [torch.stack(parts) for parts in zip(*states, strict=True)]
        n_trunk = len(self.params)
        self.params = dict(zip(self.params, stacked[:n_trunk], strict=True))
        self.heads.load([s[n_trunk:] for s in states])
        self.active = list(range(len(states)))

    def write_back(self, net: FusionNet, state: list[Tensor]) -> None:
        """Load one head's weights (``snapshot`` order) into its own ``FusionNet``, on the net's device."""
        names = list(self.params)
        head = state[len(names) :]
        linears = [cast(nn.Linear, m) for m in net.head.linears]
        with torch.no_grad():
            params = dict(Trunk(net).named_parameters())
            for name, value in zip(names, state, strict=False):
                params[name].copy_(value)
            for j, lin in enumerate(linears):
                lin.weight.copy_(head[j].reshape(lin.weight.shape))
                lin.bias.copy_(head[len(linears) + j].reshape(lin.bias.shape))
