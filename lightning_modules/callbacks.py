"""Probes of a fit: the early-stopping comparison, inference latency, peak memory, torch threads."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from benchmark.core import tracking


def improved(current: float, best: float | None, mode: str) -> bool:
    """Strict improvement, as Lightning's ``EarlyStopping`` with ``min_delta=0`` counts it."""
    return best is None or (current < best if mode == "min" else current > best)


def monitor_mode(monitor: str) -> str:
    """``min`` for losses, ``max`` for scores."""
    return "min" if monitor.endswith("loss") else "max"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


TIMED_BATCHES = 10  # timing more batches only costs time: per-batch latency of a head barely varies


@torch.inference_mode()
def time_inference(
    model: torch.nn.Module,
    batches: Iterable[tuple[list[Tensor], Tensor]],
    warmup: int = 2,
    timed_batches: int = TIMED_BATCHES,
) -> tuple[float, Tensor]:
    """Milliseconds per sample of ``model``'s forward pass, and its predicted labels for every batch in order.

    Batches are streamed: one is on the device at a time, so memory does not grow with the split. The
    first batch first runs ``warmup`` times untimed; then the forward passes of the first ``timed_batches``
    batches are timed (reading a batch happens outside the clock, so only the head is measured; CUDA is
    synchronised around each timed pass) and the rest only predict. Runs under ``inference_mode`` in eval
    mode, as in deployment, and restores the model's mode.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds: list[Tensor] = []
    elapsed, timed_n = 0.0, 0
    try:
        for i, (xs, y) in enumerate(batches):
            xs = [x.to(device) for x in xs]
            if i == 0:
                for _ in range(warmup):
                    model(xs)
            if i < timed_batches:
                _sync(device)
                start = time.perf_counter()
                logits = model(xs)  # (B, C)
                _sync(device)
                elapsed += time.perf_counter() - start
                timed_n += len(y)
            else:
                logits = model(xs)
            preds.append(logits.argmax(dim=-1).cpu())
    finally:
        model.train(was_training)
    if timed_n == 0:
        return float("nan"), torch.empty(0, dtype=torch.long)
    return 1000.0 * elapsed / timed_n, torch.cat(preds)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (0: leave torch's setting), then restore the previous count.

    Heads are small: their ops last microseconds, so a second thread only adds synchronisation, and when other
    processes share the cores (a study's workers, an extraction) OpenMP threads spinning for each other made a
    fit 6.7x slower than one thread in our measurement (BENCHMARKS.md). One thread per fit is the default.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def cuda_peak() -> Iterator[dict[str, float]]:
    """Yield a dict that receives ``perf/cuda_peak_mb`` of the enclosed block when CUDA is in use."""
    out: dict[str, float] = {}
    # torch leaves torch.cuda.is_initialized unannotated
    on_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    yield out
    if on_cuda or (torch.cuda.is_available() and torch.cuda.is_initialized()):  # type: ignore[no-untyped-call]
        out[tracking.PERF_CUDA_PEAK_MB] = torch.cuda.max_memory_allocated() / 2**20


def max_peak(peaks: list[dict[str, float]]) -> dict[str, float]:
    """``perf/cuda_peak_mb`` over several blocks (seeds): the largest, or nothing when none ran on CUDA."""
    values = [p[tracking.PERF_CUDA_PEAK_MB] for p in peaks if tracking.PERF_CUDA_PEAK_MB in p]
    return {tracking.PERF_CUDA_PEAK_MB: max(values)} if values else {}
