"""``CachedFeatureDataModule``: train / validation / test batches streamed from per-layer feature caches.

A *selection* is one classifier input: a model's cache directories (train, test, optional own
validation) plus a layer spec. Validation rows come from the dataset's own validation cache when the
selections name one, else from a stratified split of the train cache seeded by ``split_seed``
(``data.split_seed``, deliberately separate from ``train.seed`` so every trial and seed of a study
validates on the same rows): fold ``fold`` of ``cv_folds`` stratified folds (classes smaller than that under the
``cv_small_classes`` rule), or the single ``val_fraction`` split when ``cv_folds`` is 0
(``lightning_modules.folds``). Test rows come only from the test caches and are never used for a choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as L
import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader

from benchmark.core.cache import CacheError, FeatureCache
from lightning_modules.features import (
    ByteCounter,
    CachedFeatureDataset,
    SelectionFeatures,
    ShuffledBatchSampler,
)
from lightning_modules.folds import check_cv_folds, fold_rows
from lightning_modules.layers import LayerSpec, parse_layer_spec

if TYPE_CHECKING:
    from benchmark.core.config import BenchConfig
    from benchmark.core.study_data import ModelDirs

SPLITS = ("train", "val", "test")
Batch = tuple[list[Tensor], Tensor]  # ([ (B, H_i) per selection ], (B,))


@dataclass(frozen=True)
class Selection:
    """One classifier input: a model's cached features at a layer spec.

    Attributes:
        name: Label used in messages (usually the model alias).
        layer: A ``LayerSpec`` or its string form (``"-1"``, ``"mean:last4"``; see ``lightning_modules.layers``).
        train_dir: Cache directory of the train split.
        test_dir: Cache directory of the test split.
        val_dir: Cache directory of the dataset's own validation split, or None to split train.
    """

    name: str
    layer: LayerSpec
    train_dir: Path
    test_dir: Path
    val_dir: Path | None = None

    @classmethod
    def of(cls, name: str, layer: str | LayerSpec, dirs: ModelDirs) -> Selection:
        """``name``'s features at ``layer`` in the cache folders resolved for a command (``StudyData.dirs``)."""
        return cls(name, parse_layer_spec(layer), dirs.train, dirs.test, dirs.val)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", parse_layer_spec(self.layer))
        for attr in ("train_dir", "test_dir", "val_dir"):
            if getattr(self, attr) is not None:
                object.__setattr__(self, attr, Path(getattr(self, attr)))

    def cache_dir(self, split: str) -> Path | None:
        """The cache directory for ``split`` (``train``, ``val`` or ``test``)."""
        return {"train": self.train_dir, "val": self.val_dir, "test": self.test_dir}[split]


def resolve_selection(cfg: BenchConfig, model: str, layer: str | int | LayerSpec) -> Selection:
    """The selection of ``model`` at ``layer`` on ``cfg.extract.dataset``, from config alone (no model load).

    Test split ``test``; validation split ``cfg.data.val_split`` when set. Directories need not exist yet;
    the DataModule says which extraction to run when one is missing.
    """
    from benchmark.core.keys import load_text_split, resolve_features  # reads texts: only when resolving

    splits = {"train": "train", "test": "test", **({"val": cfg.data.val_split} if cfg.data.val_split else {})}
    dirs = {ours: resolve_features(cfg, model, load_text_split(cfg, theirs)).path for ours, theirs in splits.items()}
    return Selection(model, parse_layer_spec(layer), dirs["train"], dirs["test"], dirs.get("val"))


def _open(sel: Selection, split: str, opened: dict[Path, FeatureCache]) -> FeatureCache:
    """The selection's cache of ``split``, validated once per directory (several selections may share one)."""
    path = sel.cache_dir(split)
    if path is None or not (path / "meta.json").is_file():
        raise CacheError(
            f"no {split} features for '{sel.name}' at {path}: run `layerfuse extract --model {sel.name}` for that "
            "dataset and split first"
        )
    if path not in opened:
        opened[path] = FeatureCache(path)
    return opened[path]


def check_same_rows(caches: list[tuple[Selection, FeatureCache]], split: str) -> np.ndarray:
    """Return the shared labels of ``caches`` after checking they hold the same texts and labels in one order.

    Raises:
        CacheError: naming both caches and what differs.
    """
    (sel0, first), labels0 = caches[0], caches[0][1].labels()
    for sel, cache in caches[1:]:
        if cache is first:  # another layer of the same cache
            continue
        what = None
        if cache.n != first.n:
            what = f"{first.n} vs {cache.n} rows"
        elif cache.texts_sha256 != first.texts_sha256:
            what = "different texts (texts_sha256)"
        elif cache.label_names != first.label_names:
            what = f"different label names {first.label_names} vs {cache.label_names}"
        elif not np.array_equal(cache.labels(), labels0):
            what = "different labels"
        if what:
            raise CacheError(
                f"{split} features of '{sel0.name}' ({first.path}) and '{sel.name}' ({cache.path}) do not cover the "
                "same texts "
                f"and labels in the same order: {what}. Extract every model with the same dataset, split and --limit"
            )
    return labels0


def _check_split_caches(name: str, firsts: dict[str, FeatureCache]) -> None:
    """Refuse split caches (of selection ``name``) with other label names, or holding another split's texts."""
    train_cache = firsts["train"]
    for split, cache in firsts.items():
        if cache.label_names != train_cache.label_names:
            raise CacheError(
                f"train ({train_cache.path}) and {split} ({cache.path}) caches of '{name}' have different label names"
            )
        if split != "train" and cache.texts_sha256 == train_cache.texts_sha256:
            raise CacheError(
                f"the {split} cache of '{name}' ({cache.path}) holds the training texts: point {split}_dir at "
                f"the {split} split"
            )
    if "val" in firsts and firsts["val"].texts_sha256 == firsts["test"].texts_sha256:
        # Choosing layers or epochs on the test texts would leak them into every reported test score.
        raise CacheError(
            f"the val cache of '{name}' ({firsts['val'].path}) holds the test texts: point val_dir at the "
            "validation split"
        )


class CachedFeatureDataModule(L.LightningDataModule):
    """Batches ``([(B, H_1), ..., (B, H_k)], (B,))`` of float32 features and int64 labels.

    Args:
        selections: The classifier inputs, in order; all must cover the same texts (checked in ``setup``).
        batch_size: Training batch size.
        val_fraction: Stratified share of train used for validation when there is no validation cache.
        split_seed: Seed of that split.
        standardize: Scale each selection with mean/std from the training part only.
        num_workers: DataLoader workers.
        shuffle_seed: Seed of the training batch order (its own generator; see ``ShuffledBatchSampler``).
        eval_batch_size: Batch size for validation and test.
        cv_folds: Stratified folds of train (0: one ``val_fraction`` split).
        fold: Which fold validates (0-based; 0 when ``cv_folds`` is 0).
        cv_small_classes: Classes with fewer than ``cv_folds`` rows: ``refuse`` or ``spread`` (``folds.fold_rows``).
    """

    def __init__(
        self,
        selections: Sequence[Selection],
        batch_size: int = 100,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        standardize: bool = True,
        num_workers: int = 0,
        shuffle_seed: int = 0,
        eval_batch_size: int = 1000,
        cv_folds: int = 0,
        fold: int = 0,
        cv_small_classes: str = "refuse",
    ) -> None:
        super().__init__()
        if not selections:
            raise ValueError("no feature selections: pass at least one Selection")
        has_val = {s.val_dir is not None for s in selections}
        if len(has_val) > 1:
            raise CacheError("either every selection names a validation cache (val_dir) or none does")
        self.selections = list(selections)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.standardize = standardize
        self.num_workers = num_workers
        self.shuffle_seed = shuffle_seed
        self.eval_batch_size = eval_batch_size
        if not 0 <= fold < max(cv_folds, 1):
            raise ValueError(f"fold={fold} is not one of the {max(cv_folds, 1)} folds (0-based)")
        self.cv_folds, self.fold, self.cv_small_classes = cv_folds, fold, cv_small_classes
        self.counter = ByteCounter()
        self.datasets: dict[str, CachedFeatureDataset] = {}
        self.label_names: list[str] = []

    @classmethod
    def from_config(cls, selections: Sequence[Selection], cfg: BenchConfig, fold: int = 0) -> CachedFeatureDataModule:
        """Build from ``cfg.data`` and ``cfg.train`` (batch size, shuffle seed), validating on fold ``fold``."""
        return cls(
            selections,
            batch_size=cfg.train.batch_size,
            val_fraction=cfg.data.val_fraction,
            split_seed=cfg.data.split_seed,
            standardize=cfg.data.standardize,
            num_workers=cfg.data.num_workers,
            shuffle_seed=cfg.train.seed,
            cv_folds=cfg.data.cv_folds,
            fold=fold,
            cv_small_classes=cfg.data.cv_small_classes,
        )

    def setup(self, stage: str | None = None) -> None:
        """Open and cross-check the caches, split train, fit the scalers (once; later calls do nothing)."""
        if self.datasets:
            return
        own_val = self.selections[0].val_dir is not None
        labels: dict[str, np.ndarray] = {}
        sources: dict[str, list[SelectionFeatures]] = {}
        firsts: dict[str, FeatureCache] = {}
        opened: dict[Path, FeatureCache] = {}
        for split in SPLITS if own_val else ("train", "test"):
            caches = [(sel, _open(sel, split, opened)) for sel in self.selections]
            labels[split] = check_same_rows(caches, split)
            sources[split] = [SelectionFeatures(c, sel.layer, self.counter) for sel, c in caches]
            firsts[split] = caches[0][1]
        _check_split_caches(self.selections[0].name, firsts)
        self.label_names = firsts["train"].label_names
        if own_val:
            train_rows, val_rows = np.arange(len(labels["train"])), np.arange(len(labels["val"]))
        else:
            check_cv_folds(labels["train"], self.cv_folds, self.cv_small_classes, self.label_names)
            train_rows, val_rows = fold_rows(
                labels["train"], self.cv_folds, self.val_fraction, self.split_seed, self.cv_small_classes
            )[self.fold]
            sources["val"], labels["val"] = sources["train"], labels["train"]
        if self.standardize:
            for i, src in enumerate(sources["train"]):
                src.fit_scaler(train_rows)
                for split in ("val", "test"):
                    if sources[split][i] is not src:
                        sources[split][i].copy_scaler(src)
        rows = {"train": train_rows, "val": val_rows, "test": np.arange(len(labels["test"]))}
        self.datasets = {split: CachedFeatureDataset(sources[split], rows[split], labels[split]) for split in SPLITS}

    @property
    def input_dims(self) -> list[int]:
        """Feature width of each selection."""
        self.setup()
        return [src.width for src in self.datasets["train"].sources]

    @property
    def num_classes(self) -> int:
        """Number of labels (from the cache's label names)."""
        self.setup()
        return len(self.label_names)

    @property
    def feature_bytes(self) -> int:
        """Bytes read from feature files so far (scaler statistics included)."""
        return self.counter.total

    def batch_sampler(self, split: str) -> ShuffledBatchSampler:
        """Batches of ``split``: train shuffled with ``shuffle_seed`` (new order each epoch), the others in order."""
        self.setup()
        train = split == "train"
        return ShuffledBatchSampler(
            len(self.datasets[split]), self.batch_size if train else self.eval_batch_size, train, self.shuffle_seed
        )

    def _loader(self, split: str) -> DataLoader[Batch]:
        sampler = self.batch_sampler(split)
        # batch_size=None: the sampler yields whole batches and the Dataset reads each with one fancy index.
        return DataLoader(
            self.datasets[split],
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Batch]:
        """Shuffled training batches (a new seeded permutation every epoch)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[Batch]:
        """Validation batches in row order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Batch]:
        """Test batches in row order."""
        return self._loader("test")
