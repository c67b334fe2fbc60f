"""What study, trial, fit and refit runs record about their data: MLflow dataset inputs and feature cache-key tags."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.core.config import BenchConfig
from benchmark.core.keys import load_text_split
from benchmark.core.run_inputs import dataset_input, held_out_dataset, split_dataset
from benchmark.core.text_data import dataset_label
from lightning_modules.features import stratified_split

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput


def training_inputs(cfg: BenchConfig) -> tuple[DatasetInput, ...]:
    """The train, validation and test sets of ``cfg``'s dataset as run inputs (contexts ``train`` etc.).

    Validation is the dataset's own ``data.val_split`` when set, else the stratified share of train that every head
    validates on (the same rows as ``CachedFeatureDataModule`` holds out).
    """
    name = dataset_label(cfg.extract.dataset)
    train, test = load_text_split(cfg, "train"), load_text_split(cfg, "test")
    if cfg.data.val_split:
        val = split_dataset(load_text_split(cfg, cfg.data.val_split), name)
    else:
        _, rows = stratified_split(train.labels, cfg.data.val_fraction, cfg.data.split_seed)
        val = held_out_dataset(train, name, rows, cfg.data.val_fraction, cfg.data.split_seed)
    return (
        dataset_input(split_dataset(train, name), tracking.CONTEXT_TRAIN),
        dataset_input(val, tracking.CONTEXT_VALIDATION),
        dataset_input(split_dataset(test, name), tracking.CONTEXT_TEST),
    )


def refit_inputs(cfg: BenchConfig) -> tuple[DatasetInput, ...]:
    """The train and test sets of ``cfg``'s dataset as run inputs of a refit (it trains on all of train)."""
    name = dataset_label(cfg.extract.dataset)
    return (
        dataset_input(split_dataset(load_text_split(cfg, "train"), name), tracking.CONTEXT_TRAIN),
        dataset_input(split_dataset(load_text_split(cfg, "test"), name), tracking.CONTEXT_TEST),
    )


def cache_key_tags(cfg: BenchConfig, train_dirs: Mapping[str, Path]) -> dict[str, str]:
    """``layerfuse.cache_key.<model>`` = the model's train cache folder under the cache root, for each model."""
    return {
        f"{tracking.TAG_CACHE_KEY}.{model}": Path(d).relative_to(cfg.paths.cache_dir).as_posix()
        for model, d in train_dirs.items()
    }
