"""Streaming reads of cached layers: row readers, per-selection aggregation and scaling, the batch Dataset.

Nothing here loads a whole layer. Each batch is one sorted gather per layer file it needs (``LayerFile``),
so memory stays flat as N grows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, get_worker_info

from benchmark.core.cache import FeatureCache, layer_file
from lightning_modules.layers import AGGREGATIONS, LayerSpec

STATS_CHUNK_ROWS = 4096  # rows per read while computing standardisation statistics
MAX_WORKERS = 63  # ByteCounter slots: one for the main process and one per DataLoader worker


class ByteCounter:
    """Bytes read from feature files, summed over the main process and DataLoader workers.

    Each process adds into its own slot of a shared-memory tensor, so worker updates are neither lost
    nor raced.
    """

    def __init__(self) -> None:
        # torch leaves Tensor.share_memory_ unannotated
        self._slots = torch.zeros(MAX_WORKERS + 1, dtype=torch.int64).share_memory_()  # type: ignore[no-untyped-call]
        self._view = self._slots.numpy()  # same memory; numpy increments are ~50x cheaper than tensor ones

    def __getstate__(self) -> dict[str, Tensor]:
        return {"_slots": self._slots}  # the tensor travels to workers as shared memory

    def __setstate__(self, state: dict[str, Tensor]) -> None:
        self._slots = state["_slots"]
        self._view = self._slots.numpy()

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` for the calling process."""
        info = get_worker_info()
        self._view[0 if info is None else 1 + info.id % MAX_WORKERS] += nbytes

    @property
    def total(self) -> int:
        """All bytes counted so far."""
        return int(self._view.sum())


class LayerFile:
    """Row reader for one ``layer_XX.npy``: ``pread`` of each run of consecutive rows into the batch buffer.

    Why not a memory map: a mapped page stays in this process's RSS until unmapped, and on current
    kernels one fault maps a whole large folio of the page cache (measured: 100 random rows of a 92 MB
    layer file mapped 55 MB), so mapped reads grow RSS with N. ``pread`` copies only the requested
    rows; the OS page cache still serves repeated epochs, and it is not part of RSS.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        mm = np.load(path, mmap_mode="r")  # parses the header only
        if mm.ndim != 2 or not mm.flags.c_contiguous:
            raise ValueError(f"{path}: expected a C-ordered 2-D array, got shape {mm.shape}")
        self.offset = int(mm.offset)
        self.shape: tuple[int, int] = (int(mm.shape[0]), int(mm.shape[1]))
        self.dtype: np.dtype[Any] = mm.dtype
        del mm
        self._fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}  # DataLoader workers open the file anew

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]

    @property
    def row_bytes(self) -> int:
        """Bytes of one row on disk."""
        return self.shape[1] * self.dtype.itemsize

    def read(self, rows: np.ndarray | slice, out: np.ndarray | None = None) -> np.ndarray:
        """The given rows (sorted indices or a slice), ``(n, H)`` in the file's dtype: read-only, or into ``out``."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        idx = np.arange(self.shape[0])[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        rb, fd = self.row_bytes, self._fd
        if len(idx) > 1 and (np.diff(idx) == 1).any():  # one read per run of consecutive rows
            starts = np.flatnonzero(np.diff(idx, prepend=-2) != 1)
            chunks = zip(
                (np.diff(starts, append=len(idx)) * rb).tolist(), (self.offset + idx[starts] * rb).tolist(), strict=True
            )
            data = b"".join([os.pread(fd, size, pos) for size, pos in chunks])
        else:  # sparse rows (a shuffled batch): one read per row
            data = b"".join([os.pread(fd, rb, pos) for pos in (self.offset + idx * rb).tolist()])
        if len(data) != len(idx) * rb:
            raise OSError(f"{self.path}: short read; the cache file is truncated, re-extract it")
        rows_read = np.frombuffer(data, dtype=self.dtype).reshape(len(idx), self.shape[1])
        if out is None:
            return rows_read  # read-only: callers cast or copy it
        out[...] = rows_read
        return out


def standardise(
    raw: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None, out: np.ndarray | None = None
) -> np.ndarray:
    """``(raw - mean) / std`` as float32 (``raw`` cast as it is read), or ``raw`` as float32 without statistics.

    The one scaling of features, for training and for exported models, so both see bit-equal inputs.
    """
    if out is None:
        out = np.empty(raw.shape, dtype=np.float32)
    if mean is not None and std is not None:
        np.subtract(raw, mean, out=out)  # casts float16 -> float32 in the same pass
        np.divide(out, std, out=out)
    else:
        out[...] = raw
    return out


def aggregate_layers(parts: list[np.ndarray], agg: str | None) -> np.ndarray:
    """A selection's ``(n, H)`` features from its layers' rows: one layer as is, or their float32 aggregation."""
    if agg is None:
        return parts[0]
    return AGGREGATIONS.get(agg)(np.stack(parts).astype(np.float32))  # (k, n, H) -> (n, H)


class SelectionFeatures:
    """One selection's features in one split: the layer files it needs, aggregated and optionally scaled.

    Args:
        cache: The split's cache.
        spec: Which layer(s); aggregations read only the layers they name.
        counter: Where read bytes are counted.
    """

    def __init__(self, cache: FeatureCache, spec: LayerSpec, counter: ByteCounter) -> None:
        self.spec = spec
        self.layers = spec.resolve(cache.num_layers)
        self.files = [LayerFile(cache.path / layer_file(i)) for i in self.layers]
        self.aggregate = AGGREGATIONS.get(spec.agg) if spec.agg else None
        self.width = cache.hidden_size
        self.counter = counter
        self.mean: np.ndarray | None = None  # (H,) float32, set by ``fit_scaler``
        self.std: np.ndarray | None = None

    def read_raw(self, rows: np.ndarray | slice) -> np.ndarray:
        """Unscaled ``(n, H)`` features: the file's dtype for one layer, float32 for an aggregation."""
        parts = [f.read(rows) for f in self.files]
        self.counter.add(sum(p.nbytes for p in parts))
        return aggregate_layers(parts, self.spec.agg)

    def read(self, rows: np.ndarray | slice, out: np.ndarray | None = None) -> np.ndarray:
        """Aggregated, scaled ``(n, H)`` float32 features of ``rows``, written into ``out`` when given."""
        raw = self.read_raw(rows)
        return standardise(raw, self.mean, self.std, out)

    def fit_scaler(self, rows: np.ndarray) -> None:
        """Per-feature mean and std over ``rows`` (the training part), read in chunks of ``STATS_CHUNK_ROWS``.

        Features with std below 1e-6 are only centred (divided by 1) so constant columns stay finite.
        """
        total = np.zeros(self.width, dtype=np.float64)
        total_sq = np.zeros(self.width, dtype=np.float64)
        for start in range(0, len(rows), STATS_CHUNK_ROWS):
            x = self.read_raw(rows[start : start + STATS_CHUNK_ROWS]).astype(np.float64)
            total += x.sum(axis=0)
            total_sq += np.square(x).sum(axis=0)
        mean = total / len(rows)
        std = np.sqrt(np.maximum(total_sq / len(rows) - np.square(mean), 0.0))
        std[std < 1e-6] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def copy_scaler(self, other: SelectionFeatures) -> None:
        """Use another split's statistics (validation and test reuse the training part's)."""
        self.mean, self.std = other.mean, other.std


class CachedFeatureDataset(Dataset[tuple[list[Tensor], Tensor]]):
    """Rows of one split; ``dataset[positions]`` returns a whole batch ``([ (B, H_i) per selection ], (B,))``.

    Positions index ``rows`` (sorted cache row ids); a batch is read with one sorted fancy index per layer
    file. An int position returns a batch of one.
    """

    def __init__(self, sources: list[SelectionFeatures], rows: np.ndarray, labels: np.ndarray) -> None:
        self.sources = sources
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.labels = np.asarray(labels, dtype=np.int64)[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: int | list[int] | np.ndarray) -> tuple[list[Tensor], Tensor]:
        return self.batch(positions)

    def batch(
        self, positions: int | list[int] | np.ndarray, which: list[int] | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Features of the given positions for all sources, or only the sources numbered in ``which``."""
        pos = np.sort(np.atleast_1d(np.asarray(positions, dtype=np.int64)))
        rows = self.rows[pos]
        sources = self.sources if which is None else [self.sources[i] for i in which]
        xs = [torch.from_numpy(src.read(rows)) for src in sources]  # k x (B, H_i)
        return xs, torch.from_numpy(self.labels[pos])  # (B,)


class ShuffledBatchSampler(Sampler[list[int]]):
    """Batches of positions: a fresh seeded permutation per epoch (own generator), or in order.

    Every pass draws the next permutation from the sampler's generator, so two samplers built with the
    same seed yield the same batches epoch after epoch, independent of the global RNG.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            yield sorted(order[start : start + self.batch_size].tolist())

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)
