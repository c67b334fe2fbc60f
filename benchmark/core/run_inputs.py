"""MLflow dataset inputs: the splits a run trains, validates or tests on, so runs can be filtered by dataset.

Each split is one ``mlflow.data`` dataset: name = the dataset's label (as in ``layerfuse/<label>``), digest = the
first 12 hex digits of the split's data hash (the one in its cache folder name), source = the file read (or the
hub dataset id), and a profile with its row and class counts. A validation set held out of train is a dataset
of its own: train's digest and the held-out rows hashed together, its profile naming what it was taken from.
Runs search as ``dataset.name = 'mr' AND dataset.context = 'train'`` (``search_runs`` and the UI's filter box).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.data.meta_dataset import MetaDataset

from benchmark.core import tracking
from benchmark.core.config_sections import DataConfig
from benchmark.core.row_split import stratified_split
from benchmark.core.study_data import ModelDirs, StudyData
from benchmark.core.text_data import TextSplit

if TYPE_CHECKING:
    import numpy as np
    from mlflow.entities import DatasetInput
    from mlflow.tracking import MlflowClient

DIGEST_CHARS = 12  # as in the cache folder name (``<dataset>-<12 hex>``)


class SplitDataset(MetaDataset):
    """A dataset known by its metadata (the texts stay where they are), with a profile of counts."""

    def __init__(self, source: Any, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        """Row and class counts, the split, and for a held-out set what it was taken from."""
        return self._profile

    def to_dict(self) -> dict[str, str]:
        """MLflow's dataset fields plus the profile (JSON)."""
        out: dict[str, str] = super().to_dict()
        out["profile"] = json.dumps(self._profile)
        return out


def _source(split: TextSplit) -> Any:
    if split.from_hub:
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        return HuggingFaceDatasetSource(path=split.source, split=split.split)
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # MLflow registers its local source twice and warns that it picked one
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(split.source)


def split_dataset(split: TextSplit, name: str) -> SplitDataset:
    """The whole of ``split`` as an MLflow dataset named ``name``."""
    profile = {"num_rows": len(split.texts), "num_classes": len(split.label_names), "split": split.split}
    return SplitDataset(_source(split), name, split.data_sha256[:DIGEST_CHARS], profile)


def held_out_dataset(train: TextSplit, name: str, rows: np.ndarray, fraction: float, seed: int) -> SplitDataset:
    """The validation rows ``rows`` held out of ``train`` (a stratified ``fraction`` drawn with ``seed``)."""
    digest = hashlib.sha256(f"{train.data_sha256}:".encode() + rows.astype("int64").tobytes()).hexdigest()
    profile = {
        "num_rows": len(rows),
        "num_classes": len(train.label_names),
        "split": train.split,
        "held_out_of": train.data_sha256[:DIGEST_CHARS],
        "fraction": fraction,
        "seed": seed,
    }
    return SplitDataset(_source(train), name, digest[:DIGEST_CHARS], profile)


def dataset_input(dataset: SplitDataset, context: str) -> DatasetInput:
    """``dataset`` as a run input used in ``context`` (``train``, ``validation`` or ``test``)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])


def log_inputs(mlc: MlflowClient, run_id: str, inputs: Sequence[DatasetInput]) -> None:
    """Attach ``inputs`` to a run (no active run needed; an input the run already has is not repeated)."""
    if inputs:
        mlc.log_inputs(run_id, datasets=list(inputs))


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
