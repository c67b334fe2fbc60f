"""``fit_units``: the ``FusionClassifier`` of every unit (fold, seed) of a configuration, trained as one batched model.

Units of a configuration differ only in their training rows (fold) and seed, so their models have one shape:
the projections and fusion of all units run as one ``torch.func.vmap`` over stacked parameters, their MLP heads
as ``BatchedHeads`` (per-seed dropout masks). Each unit keeps what its own ``fit_and_evaluate`` would have: the
initial weights (``seed_everything(seed)`` then the same constructor), its fold's batches in its seed's order,
Adam, early stopping on ``train.monitor`` with ``patience`` and the best epoch's weights for the test score. The
vmapped GEMMs round differently from a single fit's, so a unit equals its own fit within numerical noise (the
layer sweep, single layers only, stays bit-equal). Units whose folds hold equally many rows share a model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, cast

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from benchmark.core.config import with_values
from lightning_modules.batched import BatchedHeads
from lightning_modules.callbacks import monitor_mode, peak_rss_mb, time_inference, torch_threads
from lightning_modules.components.classifier import make_adam
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.features import CachedFeatureDataset, ShuffledBatchSampler
from lightning_modules.folds import Unit
from lightning_modules.module import FusionClassifier
from lightning_modules.sweep import HeadTrack, still_training
from lightning_modules.train import FitResult

if TYPE_CHECKING:
    from benchmark.core.config import BenchConfig

Report = Callable[[int, float], None]  # (epoch, first unit's val/acc): may raise to prune the trial


class _Trunk(nn.Module):
    """Projections and fusion of one ``FusionClassifier`` (the part before its MLP head)."""

    def __init__(self, model: FusionClassifier) -> None:
        super().__init__()
        self.projections, self.fusion = model.projections, model.fusion

    def forward(self, xs: list[Tensor]) -> Tensor:
        if self.projections:
            xs = [proj(x) for proj, x in zip(self.projections, xs, strict=True)]  # k x (B, d)
        return cast(Tensor, self.fusion(xs))  # (B, D)


def fit_units(
    cfg: BenchConfig, selections: Sequence[Selection], units: Sequence[Unit], report: Report | None = None
) -> list[FitResult]:
    """Train and score ``selections`` on every unit at once; one ``FitResult`` per unit, in the order given.

    ``report(epoch, val_acc)`` receives the first unit's validation accuracy after each epoch (a pruning hook).
    """
    with torch_threads(cfg.train.threads):
        dms = {u.fold: CachedFeatureDataModule.from_config(selections, cfg, u.fold) for u in units}
        for dm in dms.values():
            dm.setup()
        groups: dict[int, list[Unit]] = {}
        for u in units:
            groups.setdefault(len(dms[u.fold].datasets["train"]), []).append(u)
        results: dict[Unit, FitResult] = {}
        for i, group in enumerate(groups.values()):
            results |= _fit_group(cfg, dms, group, report if i == 0 else None)
        return [results[u] for u in units]


def _batch(datasets: list[CachedFeatureDataset], positions: Sequence[np.ndarray]) -> tuple[list[Tensor], Tensor]:
    """Per selection ``(n, B, H_i)`` and labels ``(n, B)``: each unit's rows at its positions."""
    parts = [ds.batch(p) for ds, p in zip(datasets, positions, strict=True)]
    xs = [torch.stack([xs[j] for xs, _ in parts]) for j in range(len(parts[0][0]))]
    return xs, torch.stack([y for _, y in parts])


def _fit_group(
    cfg: BenchConfig, dms: dict[int, CachedFeatureDataModule], group: list[Unit], report: Report | None
) -> dict[Unit, FitResult]:
    t, started = cfg.train, time.perf_counter()
    dm0 = dms[group[0].fold]
    c = dm0.num_classes
    models = []
    for u in group:  # as _fit_and_evaluate builds its model: global seed, then the constructor
        L.seed_everything(t.seed + u.seed, workers=True, verbose=False)
        unit_train = with_values(cfg, {"train.seed": t.seed + u.seed}).train
        models.append(FusionClassifier.from_config(dm0.input_dims, c, unit_train))
    trunks = [_Trunk(m) for m in models]
    params, buffers = stack_module_state(trunks)
    base = copy.deepcopy(_Trunk(models[0])).to("meta")  # the structure only: parameters come from ``params``

    def one(p: dict[str, Tensor], b: dict[str, Tensor], xs: list[Tensor]) -> Tensor:
        return functional_call(base, (p, b), (xs,))  # type: ignore[no-any-return]

    trunk = vmap(one)
    heads = BatchedHeads([m.head for m in models], torch.device("cpu"))
    trunk_opt = make_adam(list(params.values()), t.lr, t.weight_decay) if params else None
    head_opt = make_adam(heads.parameters(), t.lr, t.weight_decay)
    split = {s: [dms[u.fold].datasets[s] for u in group] for s in ("train", "val")}
    samplers = [
        ShuffledBatchSampler(len(ds), t.batch_size, True, t.seed + u.seed)
        for ds, u in zip(split["train"], group, strict=True)
    ]
    tracks = [HeadTrack(monitor_mode(t.monitor), t.patience) for _ in group]
    active = list(range(len(group)))
    for epoch in range(t.max_epochs):
        for pos in zip(*samplers, strict=True):
            xs, y = _batch([split["train"][i] for i in active], [np.asarray(pos[i]) for i in active])
            logits = heads.forward(trunk(params, buffers, xs), train=True)  # (n, B, C)
            n = logits.shape[0]
            loss = F.cross_entropy(logits.reshape(-1, c), y.reshape(-1), reduction="none").view(n, -1).mean(dim=1).sum()
            for opt in (trunk_opt, head_opt):
                if opt is not None:
                    opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            for opt in (trunk_opt, head_opt):
                if opt is not None:
                    opt.step()
        v_loss, v_acc, v_f1 = _evaluate(trunk, params, buffers, heads, [split["val"][i] for i in active], dm0, c)
        if report is not None and active[0] == 0:
            report(epoch, float(v_acc[0]))
        keep = still_training(
            [tracks[ui] for ui in active], epoch, t.monitor, (v_loss, v_acc, v_f1), partial(_snapshot, params, heads)
        )
        if len(keep) < len(active):
            active = [active[i] for i in keep]
            if not active:
                break
            head_opt = heads.keep(keep, head_opt)
            params, trunk_opt = _keep(params, keep, trunk_opt, t.lr, t.weight_decay)
    fit_s = (time.perf_counter() - started) / len(group)
    return {u: _score(models[i], tracks[i], dms[u.fold], fit_s) for i, u in enumerate(group)}


def _snapshot(params: dict[str, Tensor], heads: BatchedHeads, i: int) -> list[Tensor]:
    return [p.detach()[i].clone() for p in params.values()] + heads.snapshot(i)


def _keep(
    params: dict[str, Tensor], idx: list[int], opt: torch.optim.Optimizer | None, lr: float, wd: float
) -> tuple[dict[str, Tensor], torch.optim.Optimizer | None]:
    """Keep units ``idx`` of the stacked trunk parameters and their Adam moments."""
    if opt is None:
        return params, None
    new = {k: p.detach()[idx].clone().requires_grad_(True) for k, p in params.items()}
    new_opt = make_adam(list(new.values()), lr, wd)
    for old, fresh in zip(params.values(), new.values(), strict=True):
        if st := opt.state.get(old):
            new_opt.state[fresh] = {
                "step": st["step"].clone(),
                "exp_avg": st["exp_avg"][idx].clone(),
                "exp_avg_sq": st["exp_avg_sq"][idx].clone(),
            }
    return new, new_opt


@torch.no_grad()
def _evaluate(
    trunk: Callable[..., Tensor],
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    heads: BatchedHeads,
    datasets: list[CachedFeatureDataset],
    dm: CachedFeatureDataModule,
    c: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-unit validation (loss, acc, macro-F1), in the fit's validation batches."""
    losses, preds, targets = [], [], []
    n = len(datasets[0])
    for start in range(0, n, dm.eval_batch_size):
        pos = np.arange(start, min(start + dm.eval_batch_size, n))
        xs, y = _batch(datasets, [pos] * len(datasets))
        logits = heads.forward(trunk(params, buffers, xs), train=False)  # (n, B, C)
        losses.append(torch.stack([F.cross_entropy(lg, yi) for lg, yi in zip(logits, y, strict=True)]) * len(pos))
        preds.append(logits.argmax(dim=-1))
        targets.append(y)
    pred, y = torch.cat(preds, dim=1), torch.cat(targets, dim=1)
    acc = (pred == y).float().mean(dim=1)
    f1 = multiclass_f1_score(pred, y, c, average="macro", multidim_average="samplewise")
    return torch.stack(losses).sum(dim=0) / n, acc, f1


def _score(model: FusionClassifier, track: HeadTrack, dm: CachedFeatureDataModule, fit_s: float) -> FitResult:
    """Load the unit's best weights into its own model and score test as ``fit_and_evaluate`` does."""
    trunk_names = [k for k, _ in _Trunk(model).named_parameters()]
    state = dict(zip(trunk_names, track.state[: len(trunk_names)], strict=True))
    head = track.state[len(trunk_names) :]
    n_lin = len(model.head.linears)
    with torch.no_grad():
        for name, p in _Trunk(model).named_parameters():
            p.copy_(state[name])
        for j, lin in enumerate(cast(nn.Linear, m) for m in model.head.linears):
            lin.weight.copy_(head[j].reshape(lin.weight.shape))
            lin.bias.copy_(head[n_lin + j].reshape(lin.bias.shape))
    feature_bytes = dm.feature_bytes
    head_ms, test_pred = time_inference(model, dm.test_dataloader())
    _, val_pred = time_inference(model, dm.val_dataloader(), warmup=0, timed_batches=1)
    y = torch.from_numpy(dm.datasets["test"].labels)
    c = dm.num_classes
    return FitResult(
        *track.val,
        test_acc=float(multiclass_accuracy(test_pred, y, c, average="micro")),
        test_f1=float(multiclass_f1_score(test_pred, y, c, average="macro")),
        best_epoch=track.best_epoch,
        epochs=track.epochs,
        params=model.param_count,
        fit_s=fit_s,
        head_ms_per_sample=head_ms,
        fused_dim=model.fused_dim,
        feature_bytes=feature_bytes,
        peak_rss_mb=peak_rss_mb(),
        test_pred=test_pred.numpy(),
        val_pred=val_pred.numpy(),
        val_rows=dm.datasets["val"].rows.copy(),
    )
