"""What study, trial, fit and refit runs record about their data: MLflow dataset inputs and feature cache-key tags."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.core.config_sections import DataConfig
from benchmark.core.run_inputs import dataset_input, held_out_dataset, split_dataset
from lightning_modules.features import stratified_split
from studies.run.caches import ModelDirs
from studies.run.study_data import StudyData

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput


def training_inputs(data: StudyData, d: DataConfig) -> tuple[DatasetInput, ...]:
    """The train, validation and test sets of ``data`` as run inputs (contexts ``train`` etc.).

    Validation is the dataset's own ``data.val_split`` when set, else the stratified share of train that every head
    validates on (the same rows as ``CachedFeatureDataModule`` holds out).
    """
    if data.val is not None:
        val = split_dataset(data.val, data.name)
    else:
        _, rows = stratified_split(data.train.labels, d.val_fraction, d.split_seed)
        val = held_out_dataset(data.train, data.name, rows, d.val_fraction, d.split_seed)
    return (
        dataset_input(split_dataset(data.train, data.name), tracking.CONTEXT_TRAIN),
        dataset_input(val, tracking.CONTEXT_VALIDATION),
        dataset_input(split_dataset(data.test, data.name), tracking.CONTEXT_TEST),
    )


def refit_inputs(data: StudyData) -> tuple[DatasetInput, ...]:
    """The train and test sets of ``data`` as run inputs of a refit (it trains on all of train)."""
    return (
        dataset_input(split_dataset(data.train, data.name), tracking.CONTEXT_TRAIN),
        dataset_input(split_dataset(data.test, data.name), tracking.CONTEXT_TEST),
    )


def cache_key_tags(cache_dir: str | Path, dirs: Mapping[str, ModelDirs]) -> dict[str, str]:
    """``layerfuse.cache_key.<model>`` = the model's train cache folder under the cache root, for each model."""
    return {
        f"{tracking.TAG_CACHE_KEY}.{model}": Path(d.train).relative_to(cache_dir).as_posix()
        for model, d in dirs.items()
    }
