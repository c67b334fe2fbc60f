"""``extract_all(cfg)``: every configured model x split into the feature cache, skipping complete keys.

A model is loaded only when at least one of its splits needs work, and once for all its splits.
"""

from __future__ import annotations

import logging
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.cache import CacheWriter, is_complete
from benchmark.config import BenchConfig
from benchmark.errors import UserError
from benchmark.hardware import resolve_token_budget
from benchmark.keys import ResolvedFeatures, load_text_split, resolve_features
from benchmark.models import LEXICAL
from benchmark.text_data import TextSplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSummary:
    """What happened to one model x split."""

    model: str
    split: str
    path: Path
    n: int
    cached: bool
    seconds: float = 0.0
    tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Throughput of the work done in this call (0 for a cache hit)."""
        return self.tokens / self.seconds if self.seconds else 0.0


def library_versions() -> dict[str, str]:
    """Versions recorded in meta.json and MLflow tags."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("layerfuse", "torch", "transformers", "numpy", "gguf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _peak_memory_mb(device: str) -> dict[str, float]:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _extract_one(extractor: Any, rf: ResolvedFeatures, cfg: BenchConfig) -> ExtractSummary:
    from tqdm.auto import tqdm

    texts = rf.split.texts
    ids = extractor.tokenize(texts)
    # Longest first, ties by index: a fixed order, so chunks (and their bytes) are the same on every run.
    order = np.array(sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i)), dtype=np.int64)
    size = cfg.extract.chunk_size
    with CacheWriter(rf.path, rf.key, n=len(texts), chunk_size=size) as writer:
        todo = writer.missing_chunks()
        done_rows = len(texts) - sum(len(order[i * size:(i + 1) * size]) for i in todo)
        if done_rows:
            log.info("%s %s: resuming, %d of %d texts already extracted", rf.spec.alias, rf.split.split, done_rows, len(texts))
        seconds, tokens = 0.0, 0
        with tqdm(total=len(texts), initial=done_rows, desc=f"{rf.spec.alias} {rf.split.split}", unit="text",
                  disable=not cfg.extract.show_progress, dynamic_ncols=True) as bar:
            for i in todo:
                rows = order[i * size:(i + 1) * size]
                feats, stats = extractor.encode_ids([ids[r] for r in rows], progress=bar)
                writer.write_chunk(i, rows, feats, {"seconds": stats.seconds, "tokens": stats.tokens})
                seconds += stats.seconds
                tokens += stats.tokens
        totals = writer.chunk_stats()
        meta = {
            "model_alias": rf.spec.alias,
            "model_source": rf.spec.hf_id,
            "model_kind": rf.spec.kind,
            "label_names": rf.split.label_names,
            "texts_sha256": rf.split.texts_sha256,
            "labels_sha256": rf.split.labels_sha256,
            "device": rf.device,
            "extract_seconds": totals.get("seconds", 0.0),
            "tokens": int(totals.get("tokens", 0)),
            "tokens_per_s": totals.get("tokens", 0) / max(totals.get("seconds", 0.0), 1e-9),
            "extract_ms_per_sample": 1000 * totals.get("seconds", 0.0) / len(texts),
            "model_load_seconds": extractor.load_seconds,
            "versions": library_versions(),
            **_peak_memory_mb(rf.device),
        }
        writer.finalize(rf.split.labels, meta)
    return ExtractSummary(rf.spec.alias, rf.split.split, rf.path, len(texts), False, seconds, tokens)


def _make_extractor(rf: ResolvedFeatures, cfg: BenchConfig) -> Any:
    from extractors.hf import HFHiddenStateExtractor

    if rf.spec.kind == LEXICAL:
        from extractors.tfidf import TfidfExtractor

        return TfidfExtractor(load_text_split(cfg, "train").texts, rf.spec.hidden_size)

    return HFHiddenStateExtractor(
        rf.spec, device=rf.device, dtype=rf.key.dtype, pooling=rf.key.pooling, max_length=rf.key.max_length,
        batch_size=cfg.extract.batch_size, token_budget=resolve_token_budget(cfg.extract.token_budget, rf.device),
        trust_remote_code=cfg.extract.trust_remote_code,
    )


def extract_all(cfg: BenchConfig) -> list[ExtractSummary]:
    """Extract every ``cfg.extract.models`` x ``cfg.extract.splits`` of ``cfg.extract.dataset``.

    Returns:
        One summary per model x split, in config order.

    Raises:
        UserError: bad model/dataset/split, or ``overwrite=never`` with a missing cache.
    """
    splits: dict[str, TextSplit] = {s: load_text_split(cfg, s) for s in cfg.extract.splits}
    summaries = []
    for model in cfg.extract.models:
        extractor = None
        for split_name, text_split in splits.items():
            rf = resolve_features(cfg, model, text_split)
            if cfg.extract.overwrite != "always" and is_complete(rf.path):
                log.info("%s %s: cache hit at %s", model, split_name, rf.path)
                summaries.append(ExtractSummary(model, split_name, rf.path, len(text_split.texts), True))
                continue
            if cfg.extract.overwrite == "never":
                raise UserError(f"no complete cache for {model} on {cfg.extract.dataset}/{split_name} and extract.overwrite=never; "
                                "run without --overwrite never to extract it")
            if cfg.extract.overwrite == "always":
                shutil.rmtree(rf.path.with_name(rf.path.name + ".partial"), ignore_errors=True)
            if extractor is None:
                extractor = _make_extractor(rf, cfg)
            summaries.append(_extract_one(extractor, rf, cfg))
    return summaries
