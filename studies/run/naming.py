"""Names a study derives from its config: the study name, the models it reads, the splits, the extract command."""

from __future__ import annotations

import shlex
from pathlib import Path

from benchmark.core.config import BenchConfig
from benchmark.core.config_sections import DataConfig, PathsConfig
from benchmark.core.text_data import dataset_label
from studies.trials.presets import PRESETS

EXTRACT_SETTINGS = {
    "paths": (PathsConfig(), ("data_dir", "models_dir", "cache_dir")),
    "data": (DataConfig(), ("text_column", "label_column", "hf_config", "encoding")),
}


def study_name(cfg: BenchConfig) -> str:
    """``study.name`` or ``<preset>-<dataset>-<model+model>`` (``<preset>-<dataset>`` without models)."""
    if cfg.study.name:
        return cfg.study.name
    dataset = dataset_label(cfg.extract.dataset)
    if not models_used(cfg):
        return f"{cfg.study.preset}-{dataset}"
    # A model given as a folder is named by the folder (hub ids keep their org/name).
    models = [Path(m).name if Path(m).is_dir() else m for m in cfg.extract.models]
    return f"{cfg.study.preset}-{dataset}-{'+'.join(models)}"


def models_used(cfg: BenchConfig) -> tuple[str, ...]:
    """The configured models, or none for a preset that reads texts, not features (the TF-IDF baseline)."""
    known = cfg.study.preset in PRESETS
    return cfg.extract.models if not known or PRESETS.get(cfg.study.preset).needs_features else ()


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
