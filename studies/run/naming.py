"""Names a study derives from its config: the study name and the models it reads."""

from __future__ import annotations

from pathlib import Path

from benchmark.core.config import BenchConfig
from benchmark.core.text_data import dataset_label
from studies.trials.presets import PRESETS


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
