"""Fast all-layer sweep: one MLP head per layer, all L+1 trained at once with batched weights.

Each layer's head is the one ``fit_and_evaluate`` trains for a single layer with ``fusion=concat`` (no
projection): same initial weights (``MLPHead`` seeded by ``train.seed``), same batches
(``ShuffledBatchSampler`` with the same seed), same dropout masks, same Adam update (element-wise, so a
stacked parameter is the per-layer update), the same early-stopping rule per layer (strict improvement of
``train.monitor``, stop after ``patience`` epochs without) and best-epoch weights for the test score.

Where the time goes (BENCHMARKS.md): the batched matmuls and the Adam pass over the stacked weights; the
rest is kept off the step. Every head has the same seed, so every head's dropout generator yields the same
masks in lockstep: one ``(B, h)`` draw per step serves all heads (exactly the draws of a single fit). The
train and validation rows of all layers are read once into a float16 block when it fits ``RESIDENT_BYTES``
(a batch is then an in-memory gather, not 31 x B reads from disk), else streamed per batch. A layer that
stopped leaves the stacked weights, its Adam moments and the block, so it costs nothing afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_f1_score

from benchmark.core.cache import FeatureCache
from lightning_modules.callbacks import improved, monitor_mode, torch_threads
from lightning_modules.components.classifier import MLPHead, apply_dropout, dropout_seed, make_adam
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.features import CachedFeatureDataset
from lightning_modules.layers import LayerSpec, parse_layer_spec
from lightning_modules.scores import HeadScore

if TYPE_CHECKING:
    from benchmark.core.config import BenchConfig


@dataclass(frozen=True, slots=True)
class LayerScore(HeadScore):
    """One layer's head scores, as a separate fit of that layer would report them."""

    layer: int
    feature_bytes: int = 0  # bytes the whole sweep read from feature files (all its layers, all passes)


RESIDENT_BYTES = 1 << 30  # train + validation rows of all layers held in memory up to this size (MR, 31 x 576: 254 MB)


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

    All heads must share one seed: their dropout generators then yield identical masks, so one draw per
    step is broadcast over the heads (the batched step stays equal to each head's own fit).
    """

    def __init__(self, heads: list[MLPHead], device: torch.device) -> None:
        seeds = {h.seed for h in heads}
        if len(seeds) != 1:
            raise ValueError(f"batched heads share one seed (one dropout stream), got seeds {sorted(seeds)}")
        self.dropout = heads[0].dropout
        n_lin = len(heads[0].linears)
        linears = [[cast(nn.Linear, h.linears[j]) for j in range(n_lin)] for h in heads]
        self.weights = [self._param([lin[j].weight.detach() for lin in linears], device) for j in range(n_lin)]
        self.biases = [self._param([lin[j].bias.detach()[None] for lin in linears], device) for j in range(n_lin)]
        self.rng = np.random.default_rng(dropout_seed(seeds.pop()))

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
        """``(n, B, H) -> (n, B, C)`` logits; training draws one dropout mask ``(B, h)`` per layer for all heads."""
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            # torch leaves autograd.Function.apply unannotated
            x = _BatchedLinear.apply(x, self._full(w), self._full(b))  # type: ignore[no-untyped-call]  # (n, B, out)
            if j < len(self.weights) - 1:
                x = x.relu()
                if train and self.dropout > 0:
                    uniform = self.rng.random(tuple(x.shape[1:]), dtype=np.float32)  # (B, h): the draw MLPHead makes
                    x = apply_dropout(x, torch.from_numpy(uniform), self.dropout)  # mask broadcast over heads
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
        """Replace all heads by the given snapshots (one per head, as ``snapshot`` returns them); evaluation only."""
        stacked = [torch.stack(parts) for parts in zip(*states, strict=True)]
        n_lin = len(self.weights)
        self.weights, self.biases = list(stacked[:n_lin]), list(stacked[n_lin:])


class StackedRows:
    """One split's rows of the layers still training, as ``(n, B, H)`` float32 batches.

    Resident: the whole split's rows read once into a ``(n, N, H)`` block in the files' dtype (float16,
    half the bytes of float32 and faster to gather: measured 1.4 vs 2.6 ms per 31 x 100-row batch); a
    batch is an index into it, cast and scaled as ``stacked`` does. Streamed: each batch is read from the
    layer files by ``stacked``. Same values either way. ``keep`` drops stopped layers.
    """

    def __init__(self, dataset: CachedFeatureDataset, which: list[int], resident: bool, device: torch.device) -> None:
        self.dataset, self.which, self.device = dataset, list(which), device
        self.labels = torch.from_numpy(dataset.labels).to(device)  # (N,)
        self.block = (
            torch.from_numpy(dataset.raw_rows(np.arange(len(dataset)), self.which)).to(device) if resident else None
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, pos: list[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """Features ``(n, B, H)`` and labels ``(B,)`` of the (sorted) positions ``pos``."""
        if self.block is None:
            x, y = self.dataset.stacked(pos, self.which)
            return x.to(self.device), y.to(self.device)
        idx = torch.as_tensor(pos, device=self.device)
        return self.dataset.scale_rows(self.block.index_select(1, idx), self.which), self.labels[idx]

    def chunk(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Positions ``start:stop`` in order (evaluation)."""
        if self.block is None:
            return self.batch(np.arange(start, stop))
        return self.dataset.scale_rows(self.block[:, start:stop], self.which), self.labels[start:stop]

    def keep(self, idx: list[int]) -> None:
        """Keep the layers at positions ``idx`` of the current ones."""
        self.which = [self.which[i] for i in idx]
        if self.block is not None:
            # Move the kept layers to the front in place (idx is ascending, so i <= j): a copy of the
            # block while the old one is alive would double its memory at the first stop.
            for i, j in enumerate(idx):
                if i != j:
                    self.block[i] = self.block[j]
            self.block = self.block[: len(idx)]


def sweep_device(accelerator: str) -> torch.device:
    """The device for ``train.accelerator``: CUDA for ``gpu``/``cuda``, and for ``auto`` when available."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class _Track:
    """One layer's early stopping, as ``EarlyStopping`` + ``RestoreBest`` do it for a Lightning fit."""

    mode: str
    patience: int
    best: float | None = None
    best_epoch: int = -1
    epochs: int = 0
    wait: int = 0
    val: tuple[float, float, float] = (float("nan"),) * 3  # (acc, f1, loss) at the best epoch
    state: list[Tensor] = field(default_factory=list)

    def end_epoch(
        self, epoch: int, current: float, val: tuple[float, float, float], snapshot: Callable[[], list[Tensor]]
    ) -> bool:
        """Record an epoch's monitored value; return True when the layer stops training."""
        self.epochs = epoch + 1
        if improved(current, self.best, self.mode):
            self.best, self.best_epoch, self.wait, self.val, self.state = current, epoch, 0, val, snapshot()
            return False
        self.wait += 1
        return bool(self.patience) and self.wait >= self.patience


@torch.no_grad()
def _evaluate(
    heads: BatchedHeads, rows: StackedRows, batch_size: int, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-head (loss, acc, macro-F1) over ``rows`` in order, in batches of ``batch_size`` (as the fit's val loader)."""
    losses, preds = [], []
    for start in range(0, len(rows), batch_size):
        x, y = rows.chunk(start, min(start + batch_size, len(rows)))
        logits = heads.forward(x, train=False)  # (n, B, C)
        # One mean-reduced cross-entropy per head, as the fit computes its batch loss: the same summation
        # (a batched mean over reduction="none" rounds differently and could break a tie in early stopping).
        ce = torch.stack([F.cross_entropy(lg, y) for lg in logits])  # (n,)
        losses.append(ce * len(y))
        preds.append(logits.argmax(dim=-1))
    pred, y = torch.cat(preds, dim=1), rows.labels  # (n, N), (N,)
    loss = torch.stack(losses).sum(dim=0) / len(y)
    acc = (pred == y).float().mean(dim=1)
    # samplewise over a (heads, N) input: one macro-F1 per head in one call
    f1 = multiclass_f1_score(pred, y.expand_as(pred), num_classes, average="macro", multidim_average="samplewise")
    return loss, acc, f1


def sweep_layers(
    train_dir: str | Path,
    test_dir: str | Path,
    cfg: BenchConfig,
    layers: Sequence[int] | None = None,
    val_dir: str | Path | None = None,
) -> list[LayerScore]:
    """Train one head per layer of a model's cache at once and score each at its best validation epoch.

    Args:
        train_dir: The model's train cache.
        test_dir: Its test cache (only scored, never used for a choice).
        cfg: ``train`` (seed, lr, weight_decay, batch_size, max_epochs, patience, monitor, hidden_dims,
            dropout) and ``data`` (val_fraction, split_seed, standardize) are read; ``train.fusion`` and
            ``train.proj_dim`` are not (the single-input ``concat`` head has no projection).
        layers: Layer indices (negative allowed); default all ``0..L``.
        val_dir: The dataset's own validation cache, if any.

    Returns:
        One ``LayerScore`` per layer (absolute index), in the order given.
    """
    with torch_threads(cfg.train.threads):
        return _sweep_layers(Path(train_dir), Path(test_dir), cfg, layers, None if val_dir is None else Path(val_dir))


def _sweep_layers(
    train_dir: Path, test_dir: Path, cfg: BenchConfig, layers: Sequence[int] | None, val_dir: Path | None
) -> list[LayerScore]:
    t = cfg.train
    num_layers = FeatureCache(train_dir).num_layers
    layers = list(range(num_layers + 1)) if layers is None else [LayerSpec((i,)).resolve(num_layers)[0] for i in layers]
    dm = CachedFeatureDataModule.from_config(
        [Selection(f"layer {i}", parse_layer_spec(i), Path(train_dir), Path(test_dir), val_dir) for i in layers], cfg
    )
    dm.setup()
    c, device = dm.num_classes, sweep_device(t.accelerator)
    heads = BatchedHeads([MLPHead(h, t.hidden_dims, c, t.dropout, t.seed) for h in dm.input_dims], device)
    opt = make_adam(heads.parameters(), t.lr, t.weight_decay)
    sampler = dm.batch_sampler("train")  # the very batches fit_and_evaluate's DataLoader yields
    everything = list(range(len(layers)))
    itemsize = dm.datasets["train"].sources[0].files[0].dtype.itemsize
    train_val_bytes = (
        len(layers) * (len(dm.datasets["train"]) + len(dm.datasets["val"])) * max(dm.input_dims) * itemsize
    )
    resident = train_val_bytes <= RESIDENT_BYTES
    train, val = (StackedRows(dm.datasets[split], everything, resident, device) for split in ("train", "val"))
    tracks = [_Track(monitor_mode(t.monitor), t.patience) for _ in layers]
    active = everything  # positions (into ``layers``) still training, in head order
    for epoch in range(t.max_epochs):
        for pos in sampler:
            x, y = train.batch(pos)
            logits = heads.forward(x, train=True)  # (n, B, C)
            n = logits.shape[0]
            # Sum of per-head mean losses: each head's gradient is that of its own loss.
            loss = F.cross_entropy(logits.reshape(-1, c), y.repeat(n), reduction="none").view(n, -1).mean(dim=1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            opt.step()
        v_loss, v_acc, v_f1 = _evaluate(heads, val, dm.eval_batch_size, c)
        monitored = v_loss if t.monitor == "val/loss" else v_acc
        keep = []
        for i, li in enumerate(active):
            val_scores = (float(v_acc[i]), float(v_f1[i]), float(v_loss[i]))
            if not tracks[li].end_epoch(epoch, float(monitored[i]), val_scores, partial(heads.snapshot, i)):
                keep.append(i)
        if len(keep) < len(active):
            active = [active[i] for i in keep]
            if not active:
                break
            opt = heads.keep(keep, opt)
            train.keep(keep)
            val.keep(keep)
    del train, val  # free the resident block before the test pass
    heads.load([tr.state for tr in tracks])
    _, test_acc, test_f1 = _evaluate(
        heads, StackedRows(dm.datasets["test"], everything, False, device), dm.eval_batch_size, c
    )
    return [
        LayerScore(
            *tr.val,
            float(test_acc[i]),
            float(test_f1[i]),
            tr.best_epoch,
            tr.epochs,
            layer=layer,
            feature_bytes=dm.feature_bytes,
        )
        for i, (layer, tr) in enumerate(zip(layers, tracks, strict=True))
    ]
