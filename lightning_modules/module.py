"""``FusionClassifier``: per-model projection, a registered fusion and an MLP head, trained with Adam.

Logged metrics (on epoch): ``train/loss``, ``train/acc``, ``train/f1``, ``val/loss``, ``val/acc``, ``val/f1``,
``val/acc_best``, ``test/loss``, ``test/acc``, ``test/f1``; accuracy is micro (plain) accuracy, F1 is macro F1.
``train/acc`` and ``train/f1`` score the training-mode forward passes of the epoch (dropout on, weights
changing between batches), as the usual Lightning recipe does: a cheap trend, not a re-evaluation of train.
A step only keeps its predicted labels; the scores are computed once at the end of the epoch (a torchmetrics
update per step cost 1.4 ms, a quarter of a fit's step on MR features).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from benchmark.core import tracking
from lightning_modules.components.classifier import make_adam
from lightning_modules.components.net import FusionNet

if TYPE_CHECKING:
    from benchmark.core.config_sections import TrainConfig

Batch = tuple[list[Tensor], Tensor]


class FusionClassifier(L.LightningModule):
    """Classify texts from k feature inputs: ``head(fusion([proj_1(x_1), ..., proj_k(x_k)]))``.

    Projections ``ReLU(W x + b)`` to the common size d are built only when the fusion needs them (not
    for plain ``concat``, which then sees the raw widths).

    Args:
        input_dims: Width of each input, in selection order.
        num_classes: Number of labels.
        fusion: A name from ``FUSIONS`` or ``residual:<name>``.
        proj_dim: Common size d; 0 = the smallest input width (the paper projects onto the smaller size).
        hidden_dims: MLP head hidden sizes.
        dropout: MLP head dropout.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
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
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        moe_experts: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The parts live here (state-dict keys projections.*, fusion.*, head.*); FusionNet is the one way to build them.
        net = FusionNet(input_dims, num_classes, fusion, proj_dim, hidden_dims, dropout, moe_experts, seed)
        self.projections, self.fusion, self.head, self.fused_dim = net.projections, net.fusion, net.head, net.fused_dim
        scores = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        # ModuleDict keys cannot be "train" (an nn.Module method), hence one attribute per split.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_scores, self.test_scores = scores.clone(prefix="val/"), scores.clone(prefix="test/")
        self.num_classes = num_classes
        self._train_labels: list[tuple[Tensor, Tensor]] = []  # (predicted, true) per step of the running epoch
        self.val_acc_best = MaxMetric()

    @classmethod
    def from_config(cls, input_dims: Sequence[int], num_classes: int, train: TrainConfig) -> FusionClassifier:
        """Build from ``cfg.train``."""
        return cls(
            input_dims,
            num_classes,
            fusion=train.fusion,
            proj_dim=train.proj_dim,
            hidden_dims=train.hidden_dims,
            dropout=train.dropout,
            lr=train.lr,
            weight_decay=train.weight_decay,
            moe_experts=train.moe_experts,
            seed=train.seed,
        )

    @property
    def param_count(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, xs: list[Tensor]) -> Tensor:
        """``k x (B, H_i) -> (B, C)`` logits."""
        if self.projections:
            xs = [proj(x) for proj, x in zip(self.projections, xs, strict=True)]  # k x (B, d)
        logits: Tensor = self.head(self.fusion(xs))
        return logits  # (B, C)

    def _loss(self, split: str) -> MeanMetric:
        return cast(MeanMetric, getattr(self, f"{split}_loss"))

    def _scores(self, split: str) -> MetricCollection:
        return cast(MetricCollection, getattr(self, f"{split}_scores"))

    def model_step(self, batch: Batch, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, logits and targets of one batch; accumulates the split's loss weighted by batch size."""
        xs, y = batch
        logits = self(xs)  # (B, C)
        loss = F.cross_entropy(logits, y)
        self._loss(split).update(loss.detach(), weight=y.shape[0])
        return loss, logits, y

    def on_train_start(self) -> None:
        """Forget validation state from sanity checks or an earlier fit, so ``val/acc_best`` is this fit's."""
        self.val_loss.reset()
        self.val_scores.reset()
        self.val_acc_best.reset()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One optimisation step; logs ``train/loss``, ``train/acc`` and ``train/f1`` per epoch."""
        loss, logits, y = self.model_step(batch, "train")
        self._train_labels.append((logits.detach().argmax(dim=-1), y))
        self.log(tracking.TRAIN_LOSS, self.train_loss, on_step=False, on_epoch=True, batch_size=y.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        """Log ``train/acc`` and ``train/f1`` of the epoch's training batches."""
        if not self._train_labels:
            return
        pred, y = (torch.cat(parts) for parts in zip(*self._train_labels, strict=True))
        self._train_labels.clear()
        self.log(tracking.TRAIN_ACC, multiclass_accuracy(pred, y, self.num_classes, average="micro"))
        self.log("train/f1", multiclass_f1_score(pred, y, self.num_classes, average="macro"))

    def _eval_step(self, batch: Batch, split: str) -> None:
        _, logits, y = self.model_step(batch, split)
        scores = self._scores(split)
        scores.update(logits, y)
        self.log(f"{split}/loss", self._loss(split), on_step=False, on_epoch=True, batch_size=y.shape[0])
        self.log_dict(scores, on_step=False, on_epoch=True, batch_size=y.shape[0])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate ``val/loss``, ``val/acc``, ``val/f1``."""
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log the best validation accuracy so far."""
        if not self.trainer.sanity_checking:
            self.val_acc_best(self.val_scores["acc"].compute())
            self.log(tracking.VAL_ACC_BEST, self.val_acc_best.compute())

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate ``test/loss``, ``test/acc``, ``test/f1``."""
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (paper: lr 1e-4)."""
        return make_adam(self.parameters(), self.hparams["lr"], self.hparams["weight_decay"])
