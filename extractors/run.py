"""``extract_all(cfg)``: every configured model x split into the feature cache, skipping complete keys.

A model is loaded only when at least one of its splits needs work, and once for all its splits.
"""

from __future__ import annotations

import logging
import resource
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.cache import CacheWriter, is_complete, partial_dir, recorded_batching
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError
from benchmark.core.hardware import resolve_device, resolve_token_budget
from benchmark.core.keys import ResolvedFeatures, load_text_split, resolve_features
from benchmark.core.models import LEXICAL
from benchmark.core.text_data import TextSplit
from extractors.progress import library_bars
from extractors.tracked import ExtractTracker

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


def _batching(cfg: BenchConfig, device: str) -> dict[str, Any]:
    """The settings that decide how texts are grouped into forward passes (and so the float rounding)."""
    return {
        "batch_size": cfg.extract.batch_size,
        "token_budget": resolve_token_budget(cfg.extract.token_budget, device),
        "device": device,
    }


def _extract_one(extractor: Any, rf: ResolvedFeatures, cfg: BenchConfig) -> ExtractSummary:
    from tqdm.auto import tqdm

    texts = rf.split.texts
    ids = extractor.tokenize(texts)
    # Longest first, ties by index: a fixed order, so chunks (and their bytes) are the same on every run.
    order = np.array(sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i)), dtype=np.int64)
    size = cfg.extract.chunk_size
    asked = _batching(cfg, rf.device)
    with CacheWriter(rf.path, rf.key, n=len(texts), chunk_size=size, batching=asked) as writer:
        if writer.batching != asked:
            log.info(
                "%s %s: resuming with the batching of the unfinished run %s (this run asked for %s), so the result "
                "is byte-identical to one uninterrupted run",
                rf.spec.alias,
                rf.split.split,
                writer.batching,
                asked,
            )
        if hasattr(extractor, "token_budget"):  # set per split: the extractor is shared by all splits of a model
            extractor.batch_size = int(writer.batching.get("batch_size", asked["batch_size"]))
            extractor.token_budget = int(writer.batching.get("token_budget", asked["token_budget"]))
        todo = writer.missing_chunks()
        done_rows = len(texts) - sum(len(order[i * size : (i + 1) * size]) for i in todo)
        if done_rows:
            log.info(
                "%s %s: resuming, %d of %d texts already extracted",
                rf.spec.alias,
                rf.split.split,
                done_rows,
                len(texts),
            )
        seconds, tokens = 0.0, 0
        with tqdm(
            total=len(texts),
            initial=done_rows,
            desc=f"{rf.spec.alias} {rf.split.split}",
            unit="text",
            disable=not cfg.extract.show_progress,
            dynamic_ncols=True,
        ) as bar:
            for i in todo:
                rows = order[i * size : (i + 1) * size]
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
            "batching": writer.batching,
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
        rf.spec,
        device=rf.device,
        dtype=rf.key.dtype,
        pooling=rf.key.pooling,
        max_length=rf.key.max_length,
        batch_size=cfg.extract.batch_size,
        token_budget=resolve_token_budget(cfg.extract.token_budget, rf.device),
        trust_remote_code=cfg.extract.trust_remote_code,
    )


def _resume_device(rf: ResolvedFeatures, cfg: BenchConfig, loaded_on: str | None) -> ResolvedFeatures:
    """Run on the device an unfinished extraction of this key used, where possible; otherwise start it over.

    Chunks from another device differ in their last bits, so mixing devices would break byte identity. A model
    already loaded for an earlier split fixes the device for the later ones.
    """
    current = loaded_on or rf.device
    recorded = recorded_batching(rf.path, rf.key, len(rf.split.texts), cfg.extract.chunk_size)
    device = (recorded or {}).get("device", current)
    if device != current:
        try:
            usable = loaded_on is None and resolve_device(device) == device
        except UserError:
            usable = False
        if usable:
            log.info(
                "%s %s: resuming on %s, the device of the unfinished run (this run asked for %s)",
                rf.spec.alias,
                rf.split.split,
                device,
                current,
            )
            current = device
        else:
            log.warning(
                "%s %s: the unfinished run was made on %s, which this run cannot use; starting over on %s",
                rf.spec.alias,
                rf.split.split,
                device,
                current,
            )
            shutil.rmtree(partial_dir(rf.path), ignore_errors=True)
    return rf if current == rf.device else replace(rf, device=current)


def extract_all(cfg: BenchConfig, track: bool = False) -> list[ExtractSummary]:
    """Extract every ``cfg.extract.models`` x ``cfg.extract.splits`` of ``cfg.extract.dataset``.

    With ``track`` (the commands), each model x split that needs work is one MLflow run (``extractors.tracked``).

    Returns:
        One summary per model x split, in config order.

    Raises:
        UserError: bad model/dataset/split, or ``overwrite=never`` with a missing cache.
    """
    splits: dict[str, TextSplit] = {s: load_text_split(cfg, s) for s in cfg.extract.splits}
    summaries = []
    tracker = ExtractTracker(cfg) if track else None
    for model in cfg.extract.models:
        extractor, extractor_device = None, None
        for split_name, text_split in splits.items():
            rf = resolve_features(cfg, model, text_split)
            if cfg.extract.overwrite != "always" and is_complete(rf.path):
                log.info("%s %s: cache hit at %s", model, split_name, rf.path)
                summaries.append(ExtractSummary(model, split_name, rf.path, len(text_split.texts), True))
                continue
            if cfg.extract.overwrite == "never":
                raise UserError(
                    f"no complete cache for {model} on {cfg.extract.dataset}/{split_name} and extract.overwrite=never; "
                    "run without --overwrite never to extract it"
                )
            if cfg.extract.overwrite == "always":
                shutil.rmtree(partial_dir(rf.path), ignore_errors=True)
            rf = _resume_device(rf, cfg, extractor_device)
            if extractor is None:
                with library_bars(cfg.extract.show_progress):
                    extractor, extractor_device = _make_extractor(rf, cfg), rf.device
            with tracker.run(rf) if tracker else nullcontext():
                summaries.append(_extract_one(extractor, rf, cfg))
    return summaries
