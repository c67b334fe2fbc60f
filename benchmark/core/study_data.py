"""What a command reads, resolved once where it starts: the dataset's splits and each model's feature caches.

The steps below an entry point (set-up, fingerprint, parent run, inputs, trials, the shift check, refit, ``fit``,
the benchmarks) take this object, or the part of it they use, instead of deriving the same facts from the
configuration again: each split's texts are read once and each cache key is resolved once per process.
``open_study_data`` is the door of a study command: it checks both stores before it resolves anything.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.core.cache import CacheError, validate
from benchmark.core.config import BenchConfig
from benchmark.core.config_sections import DataConfig, PathsConfig
from benchmark.core.errors import UserError
from benchmark.core.keys import load_text_split, resolve_features
from benchmark.core.stores import check_storage_url, check_tracking
from benchmark.core.text_data import TextSplit, check_classes, dataset_label

# The settings ``layerfuse extract`` takes besides its flags: non-default ones are part of the printed command.
EXTRACT_SETTINGS = {
    "paths": (PathsConfig(), ("data_dir", "models_dir", "cache_dir")),
    "data": (DataConfig(), ("text_column", "label_column", "hf_config", "encoding")),
}


@dataclass(frozen=True)
class ModelDirs:
    """A model's train/test (and optional validation) cache directories on the study's dataset."""

    train: Path
    test: Path
    val: Path | None = None


@dataclass(frozen=True)
class StudyData:
    """A dataset's splits (train, test and the configured validation split) and the caches of the models read."""

    dataset: str  # as configured: a shared dataset's name, a folder or a hub id
    name: str  # its label: the experiment name, MLflow dataset inputs
    texts: Mapping[str, TextSplit]
    val_split: str | None
    dirs: Mapping[str, ModelDirs]  # empty for a preset that reads the texts (the lexical baseline)

    @property
    def train(self) -> TextSplit:
        """The training split."""
        return self.texts["train"]

    @property
    def test(self) -> TextSplit:
        """The test split."""
        return self.texts["test"]

    @property
    def val(self) -> TextSplit | None:
        """The dataset's own validation split (``data.val_split``), if configured."""
        return self.texts[self.val_split] if self.val_split else None


def open_study_data(cfg: BenchConfig, models: Sequence[str]) -> StudyData:
    """Check the study's Optuna storage and MLflow store, then ``resolve_data``: before anything is written.

    Raises:
        UserError: an unusable store (as ``check_storage_url`` and ``check_tracking``), or as ``resolve_data``.
    """
    check_storage_url(cfg.study.storage)
    check_tracking(cfg.tracking)
    return resolve_data(cfg, models)


def resolve_data(cfg: BenchConfig, models: Sequence[str] = ()) -> StudyData:
    """Read ``cfg``'s dataset splits and resolve the caches of ``models`` (none: the texts only).

    Raises:
        UserError: an unreadable dataset, too few classes, or a missing or broken cache (with the extract command).
    """
    texts = {s: load_text_split(cfg, s) for s in splits(cfg)}
    check_classes(texts["train"], cfg.extract.dataset)
    dirs = resolve_dirs(cfg, texts, models) if models else {}
    return StudyData(cfg.extract.dataset, dataset_label(cfg.extract.dataset), texts, cfg.data.val_split, dirs)


def resolve_dirs(cfg: BenchConfig, texts: Mapping[str, TextSplit], models: Sequence[str]) -> dict[str, ModelDirs]:
    """Cache directories of every model on ``texts`` (split -> texts), or a ``UserError`` naming the extraction to run.

    A cache that is there but unusable (truncated file, corrupt meta.json) is named with what is wrong with it.
    Commands reach this through ``resolve_data``, which reads the texts once.
    """
    dirs, missing, broken = {}, [], []
    for model in models:
        paths = {s: resolve_features(cfg, model, ts).path for s, ts in texts.items()}
        for split, path in paths.items():
            try:
                validate(path)
            except CacheError as err:
                missing.append(model)
                if path.exists():  # there but unusable: say why; the extract command below repairs it
                    broken.append(f"{model} {split}: {err.reason}")
                break
        else:
            dirs[model] = ModelDirs(paths["train"], paths["test"], paths.get(cfg.data.val_split or ""))
    if missing:
        why = f" ({'; '.join(broken)})" if broken else ""
        raise UserError(
            f"no complete feature cache for {', '.join(missing)} on {cfg.extract.dataset}{why}; "
            f"run first: {extract_command(cfg, missing)}"
        )
    return dirs


def extract_command(cfg: BenchConfig, models: list[str]) -> str:
    """The exact ``layerfuse extract`` command that creates the missing caches (non-default paths and columns kept)."""
    e = cfg.extract
    parts = [
        "layerfuse",
        "extract",
        "--model",
        ",".join(models),
        "--dataset",
        e.dataset,
        "--split",
        ",".join(splits(cfg)),
    ]
    parts += ["--limit", str(e.limit)] if e.limit else []
    parts += ["--max-length", str(e.max_length)] if e.max_length else []
    parts += ["--pooling", e.pooling] if e.pooling else []
    parts += ["--dtype", e.dtype] if e.dtype != "auto" else []
    if e.dtype == "auto" and e.device != "auto":  # an automatic dtype depends on the device
        parts += ["--device", e.device]
    for section, (defaults, keys) in EXTRACT_SETTINGS.items():
        for key in keys:
            value = getattr(getattr(cfg, section), key)
            if value != getattr(defaults, key):
                parts += ["--set", f"{section}.{key}={value}"]
    return shlex.join(parts)


def splits(cfg: BenchConfig) -> list[str]:
    """The splits a study reads: train, test and the dataset's own validation split when configured."""
    return ["train", "test"] + ([cfg.data.val_split] if cfg.data.val_split else [])
