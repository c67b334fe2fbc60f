"""``extract_all(cfg)``: every configured model x split into the feature cache, skipping complete keys.

A model is loaded only when this process has a chunk of one of its splits to compute, and once for all its splits.
"""

from __future__ import annotations

import logging
import resource
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.cache import is_complete
from benchmark.core.cache_writer import CacheWriter, check_not_busy, partial_dir, recorded_batching
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError
from benchmark.core.hardware import resolve_device, resolve_token_budget
from benchmark.core.keys import ResolvedFeatures, load_text_split, resolve_features
from benchmark.core.models import LEXICAL
from benchmark.core.stores import check_folder_path, check_tracking, check_writable
from benchmark.core.text_data import TextSplit
from extractors.progress import library_bars
from extractors.shard import Shard, open_shard
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
    complete: bool = True  # False for a shard that wrote its chunks while others still have to

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


def _compute_chunks(
    get_extractor: LazyExtractor, writer: CacheWriter, rf: ResolvedFeatures, cfg: BenchConfig, shard: Shard
) -> tuple[float, int]:
    """Compute and write this worker's missing chunks; returns (seconds, tokens) of the work done."""
    from tqdm.auto import tqdm

    texts, size = rf.split.texts, writer.chunk_size
    todo = [i for i in writer.missing_chunks() if shard.owns(i)]
    if not todo:  # nothing of ours left (a rerun, or a shard whose chunks are done): no model needed
        return 0.0, 0
    extractor = get_extractor()
    if hasattr(extractor, "token_budget"):  # set per split: the extractor is shared by all splits of a model
        extractor.batch_size = int(writer.batching["batch_size"])
        extractor.token_budget = int(writer.batching["token_budget"])
    ids = extractor.tokenize(texts)
    # Longest first, ties by index: a fixed order, so chunks (and their bytes) are the same on every run and for
    # any number of shards.
    order = np.array(sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i)), dtype=np.int64)
    mine = sum(len(order[i * size : (i + 1) * size]) for i in range(writer.num_chunks) if shard.owns(i))
    left = sum(len(order[i * size : (i + 1) * size]) for i in todo)
    if left < mine:
        log.info("%s %s: resuming, %d of %d texts already extracted", rf.spec.alias, rf.split.split, mine - left, mine)
    seconds, tokens = 0.0, 0
    desc = f"{rf.spec.alias} {rf.split.split}" + (f" [{shard.index}/{shard.count}]" if shard.sharded else "")
    bar_args = {"desc": desc, "unit": "text", "disable": not cfg.extract.show_progress, "dynamic_ncols": True}
    with tqdm(total=mine, initial=mine - left, **bar_args) as bar:
        for i in todo:
            rows = order[i * size : (i + 1) * size]
            feats, stats = extractor.encode_ids([ids[r] for r in rows], progress=bar)
            writer.write_chunk(i, rows, feats, {"seconds": stats.seconds, "tokens": stats.tokens}, shard.worker)
            seconds += stats.seconds
            tokens += stats.tokens
    return seconds, tokens


def _finalize(writer: CacheWriter, rf: ResolvedFeatures, load_seconds: float) -> None:
    totals = writer.chunk_stats()
    workers = {
        name: {**w, "tokens_per_s": w.get("tokens", 0) / max(w.get("seconds", 0.0), 1e-9)}
        for name, w in sorted(writer.worker_stats().items())
    }
    meta = {
        "model_alias": rf.spec.alias,
        "model_source": rf.spec.hf_id,
        "model_kind": rf.spec.kind,
        "label_names": rf.split.label_names,
        "texts_sha256": rf.split.texts_sha256,
        "labels_sha256": rf.split.labels_sha256,
        "device": rf.device,
        "batching": writer.batching,
        # Summed over every worker and run that wrote a chunk: compute cost, not wall time of a parallel run.
        "extract_seconds": totals.get("seconds", 0.0),
        "tokens": int(totals.get("tokens", 0)),
        "tokens_per_s": totals.get("tokens", 0) / max(totals.get("seconds", 0.0), 1e-9),
        "extract_ms_per_sample": 1000 * totals.get("seconds", 0.0) / writer.n,
        "workers": workers,
        "model_load_seconds": load_seconds,
        "versions": library_versions(),
        **_peak_memory_mb(rf.device),
    }
    writer.finalize(rf.split.labels, meta)


def _extract_one(
    get_extractor: LazyExtractor, rf: ResolvedFeatures, cfg: BenchConfig, shard: Shard, start_over: bool
) -> ExtractSummary:
    asked = _batching(cfg, rf.device)
    writer = CacheWriter(
        rf.path,
        rf.key,
        n=len(rf.split.texts),
        chunk_size=cfg.extract.chunk_size,
        batching=asked,
        shared=shard.sharded,
        start_over=start_over,
    )
    if shard.torchrun and shard.index > 0:
        shard.barrier()  # rank 0 lays out (or clears) the partial folder alone first
    try:
        writer.open()
        if shard.torchrun and shard.index == 0:
            shard.barrier()
        if writer.batching != asked:
            log.info(
                "%s %s: resuming with the batching of the unfinished run %s (this run asked for %s), so the result "
                "is byte-identical to one uninterrupted run",
                rf.spec.alias,
                rf.split.split,
                writer.batching,
                asked,
            )
        seconds, tokens = _compute_chunks(get_extractor, writer, rf, cfg, shard)
        if shard.torchrun:
            if shard.index > 0:
                writer.close()  # rank 0 takes the lock alone to finish
            shard.barrier()
        if shard.may_finish and writer.claim_finish():
            _finalize(writer, rf, get_extractor.load_seconds)
    finally:
        writer.close()
    shard.barrier()  # under torchrun every rank returns once the cache is complete
    complete = is_complete(rf.path)
    if not complete:
        log.info(
            "%s %s: shard %d/%d wrote its chunks; the last shard to finish completes %s",
            rf.spec.alias,
            rf.split.split,
            shard.index,
            shard.count,
            rf.path,
        )
    return ExtractSummary(rf.spec.alias, rf.split.split, rf.path, len(rf.split.texts), False, seconds, tokens, complete)


class LazyExtractor:
    """The extractor of one model, loaded on first call (a worker with no chunk left to compute never loads it).

    ``bind`` names the features it is loaded for; once loaded, it serves every later split of the model.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.rf: ResolvedFeatures | None = None
        self.value: Any = None

    @property
    def device(self) -> str | None:
        """The device it was loaded on, or None before loading."""
        return None if self.value is None or self.rf is None else self.rf.device

    @property
    def load_seconds(self) -> float:
        """Seconds the load took (0 when not loaded)."""
        return float(self.value.load_seconds) if self.value is not None else 0.0

    def bind(self, rf: ResolvedFeatures) -> LazyExtractor:
        """Load for ``rf`` if not loaded yet."""
        if self.value is None:
            self.rf = rf
        return self

    def __call__(self) -> Any:
        """The extractor, loaded now if this is the first call."""
        if self.value is None:
            if self.rf is None:
                raise RuntimeError("LazyExtractor called before bind()")
            with library_bars(self.cfg.extract.show_progress):
                self.value = _make_extractor(self.rf, self.cfg)
        return self.value


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


def _resume_device(
    rf: ResolvedFeatures, cfg: BenchConfig, loaded_on: str | None, shard: Shard
) -> tuple[ResolvedFeatures, bool]:
    """Run on the device an unfinished extraction of this key used, where possible; otherwise start it over.

    Chunks from another device differ in their last bits, so mixing devices would break byte identity. A model
    already loaded for an earlier split fixes the device for the later ones. A shard never starts over: the
    chunks may be another shard's work in progress.

    Returns:
        The features on the device to use, and whether the unfinished run's chunks must be dropped (the writer
        does that under its lock).
    """
    current = loaded_on or rf.device
    recorded = recorded_batching(rf.path, rf.key, len(rf.split.texts))
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
        elif shard.sharded:
            raise UserError(
                f"{rf.spec.alias} {rf.split.split}: the unfinished extraction at {partial_dir(rf.path)} was made on "
                f"{device}, which this shard cannot use; finish it there, or delete that folder to start over"
            )
        else:
            log.warning(
                "%s %s: the unfinished run was made on %s, which this run cannot use; starting over on %s",
                rf.spec.alias,
                rf.split.split,
                device,
                current,
            )
            return (rf if current == rf.device else replace(rf, device=current)), True
    return (rf if current == rf.device else replace(rf, device=current)), False


def extract_all(cfg: BenchConfig, track: bool = False) -> list[ExtractSummary]:
    """Extract every ``cfg.extract.models`` x ``cfg.extract.splits`` of ``cfg.extract.dataset``.

    With ``track`` (the commands), each model x split that needs work is one MLflow run (``extractors.tracked``).

    Returns:
        One summary per model x split, in config order.

    Under ``torchrun`` or with ``extract.shard`` this process computes only its share of each cache
    (``extractors.shard``).

    Raises:
        UserError: bad model/dataset/split, a cache folder that cannot be created, ``overwrite=never`` with a missing
            cache, or another process extracting the same key.
    """
    check_folder_path(cfg.paths.cache_dir, "paths.cache_dir")
    if track:
        check_tracking(cfg.tracking)
    splits: dict[str, TextSplit] = {s: load_text_split(cfg, s) for s in cfg.extract.splits}
    shard = open_shard(cfg)
    try:
        # Under torchrun, rank 0 alone tracks: ranks creating one MLflow store at once race on its schema.
        tracked = track and (not shard.torchrun or shard.index == 0)
        tracker = ExtractTracker(cfg) if tracked else None
        summaries = _extract_models(cfg, splits, shard, tracker)
        if tracker is not None:
            tracker.close_dead()
        return summaries
    finally:
        shard.close()


def _extract_models(
    cfg: BenchConfig, splits: dict[str, TextSplit], shard: Shard, tracker: ExtractTracker | None
) -> list[ExtractSummary]:
    summaries = []
    for model in cfg.extract.models:
        extractor = LazyExtractor(cfg)
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
            check_not_busy(rf.path)  # before a model loads or a run opens, only to be refused by the lock
            check_writable(rf.path.parent, f"paths.cache_dir={cfg.paths.cache_dir}")  # e.g. a read-only cache
            rf, other_device = _resume_device(rf, cfg, extractor.device, shard)
            # Rank 0 clears, before the other ranks join; the writer does it under the lock.
            start_over = other_device or (cfg.extract.overwrite == "always" and shard.index == 0)
            if tracker is None:
                summaries.append(_extract_one(extractor.bind(rf), rf, cfg, shard, start_over))
                continue
            extractor.bind(rf)()  # load before the run opens: a model that cannot load is a user error, not a run
            with tracker.run(rf):
                summaries.append(_extract_one(extractor, rf, cfg, shard, start_over))
    return summaries
