"""Compute the cache key of (model, dataset, split) from config alone: no model is loaded.

Every stage that needs features (extraction, DataModule, studies) resolves keys here, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.core.cache import FeatureKey, key_dir
from benchmark.core.config import BenchConfig
from benchmark.core.hardware import resolve_device, resolve_dtype
from benchmark.core.models import LEXICAL, ModelSpec, check_max_length, model_revision, resolve_model
from benchmark.core.text_data import TextSplit, load_split


@dataclass(frozen=True)
class ResolvedFeatures:
    """A model x split with its resolved key and directory."""

    spec: ModelSpec
    split: TextSplit
    key: FeatureKey
    path: Path
    device: str


def load_text_split(cfg: BenchConfig, split: str) -> TextSplit:
    """Load ``cfg.extract.dataset``'s ``split`` with the configured columns and limit."""
    return load_split(
        cfg.extract.dataset,
        split,
        cfg.paths.data_dir,
        cfg.extract.limit,
        cfg.data.text_column,
        cfg.data.label_column,
        cfg.data.hf_config,
        cfg.data.encoding,
    )


def resolve_features(cfg: BenchConfig, model: str, text_split: TextSplit) -> ResolvedFeatures:
    """Resolve the cache key and directory for ``model`` on ``text_split`` under ``cfg``."""
    spec = resolve_model(model, cfg.paths.models_dir)
    if spec.kind == LEXICAL:
        return _resolve_lexical(cfg, spec, text_split)
    # The name is checked against extractors.pooling.POOLINGS where a command starts (benchmark.cli), not here:
    # the registry's functions need torch, which this layer does not import.
    pooling = cfg.extract.pooling or spec.default_pooling
    device = resolve_device(cfg.extract.device)
    max_length = cfg.extract.max_length or spec.max_length
    check_max_length(spec, max_length)
    key = FeatureKey(
        model_id=spec.hf_id if spec.local_dir or spec.path is None else Path(spec.path).name,
        revision=model_revision(spec, cfg.paths.cache_dir),
        dataset=text_split.dataset,
        data_sha256=text_split.data_sha256,
        split=text_split.split,
        pooling=pooling,
        max_length=max_length,
        dtype=resolve_dtype(cfg.extract.dtype, device),
    )
    return ResolvedFeatures(spec, text_split, key, key_dir(cfg.paths.cache_dir, key), device)


def _resolve_lexical(cfg: BenchConfig, spec: ModelSpec, text_split: TextSplit) -> ResolvedFeatures:
    """Key of a lexical model: its features depend on the train split it is fitted on, not on pooling or length."""
    fitted_on = text_split if text_split.split == "train" else load_text_split(cfg, "train")
    key = FeatureKey(
        model_id=spec.hf_id,
        revision=f"{spec.revision}-fit-{fitted_on.data_sha256[:12]}",
        dataset=text_split.dataset,
        data_sha256=text_split.data_sha256,
        split=text_split.split,
        pooling="tfidf",
        max_length=0,
        dtype="fp32",
    )
    return ResolvedFeatures(spec, text_split, key, key_dir(cfg.paths.cache_dir, key), "cpu")
