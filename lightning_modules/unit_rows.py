"""``UnitRows``: one split's batches for stacked heads, each head reading its own sources at its own unit's rows.

A head of the engine is (unit, sources): the unit (fold, seed) says which rows and which scalers (the fold's
training-part statistics), the sources which inputs (one per input slot of the configuration: the models of a
trial, or the one layer of a sweep head). Resident: every row of each source the heads read is read once into a
block in the files' dtype (float16, half the bytes of float32 and faster to gather: measured 1.4 vs 2.6 ms per
31 x 100-row batch), on the training device, and a batch is a gather from it. Streamed: each batch is read from
the files, one read per distinct (source, rows). Same values either way, and the same IEEE operations as
``SelectionFeatures.read`` (cast, aggregate, subtract the mean, divide by the std), so bit-equal to a single fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lightning_modules.features import CachedFeatureDataset

RESIDENT_BYTES = 1 << 30  # train + validation rows held in memory up to this size (MR, 31 x 576: 254 MB)


@dataclass(frozen=True)
class Head:
    """One trained head: its unit (index into the engine's units) and its source per input slot."""

    unit: int
    sources: tuple[int, ...]


class SourceBlocks:
    """Every row of the sources some heads read, per input slot ``(S_j, N, H_j)``, in the files' dtype, on a device.

    Args:
        dataset: Any dataset of the split (sources index its ``sources``; every unit reads the same files).
        heads: The heads that will read it.
        device: Where the blocks live.
    """

    def __init__(self, dataset: CachedFeatureDataset, heads: Sequence[Head], device: torch.device) -> None:
        self.paths = [[f.path for f in src.files] for src in dataset.sources]
        self.index: list[dict[int, int]] = []  # per slot: source -> position in the block
        self.blocks: list[Tensor] = []
        for j in range(len(heads[0].sources)):
            used = sorted({h.sources[j] for h in heads})
            parts = [dataset.sources[s].read_raw(slice(None)) for s in used]  # (N, H_j) each, counted as read
            self.index.append({s: i for i, s in enumerate(used)})
            self.blocks.append(torch.from_numpy(np.stack(parts)).to(device))  # (S_j, N, H_j)

    @staticmethod
    def nbytes(dataset: CachedFeatureDataset, heads: Sequence[Head]) -> int:
        """Bytes the blocks would take."""
        used = {(j, s) for h in heads for j, s in enumerate(h.sources)}
        total = 0
        for _, s in used:
            src = dataset.sources[s]
            itemsize = 4 if src.aggregate is not None else src.files[0].dtype.itemsize
            total += src.files[0].shape[0] * src.width * itemsize
        return total


class UnitRows:
    """Batches ``k x (n, B, H_j)`` of one split for heads ``i`` (unit ``heads[i].unit``, sources ``heads[i].sources``).

    Args:
        datasets: The split's dataset of each unit (its rows and scalers).
        heads: The heads, in stacking order.
        device: Where batches go.
        blocks: The split's resident rows, or None to stream from the files.
    """

    def __init__(
        self,
        datasets: Sequence[CachedFeatureDataset],
        heads: Sequence[Head],
        device: torch.device,
        blocks: SourceBlocks | None = None,
    ) -> None:
        self.datasets, self.device, self.blocks = list(datasets), device, blocks
        self.heads = list(heads)
        self.slots = len(self.heads[0].sources)
        self.counter = self.datasets[0].sources[0].counter
        self._index()

    def _index(self) -> None:
        """Per slot: each head's block position ``(n, 1)`` and scalers ``(n, 1, H_j)`` (None when not standardised)."""
        self.unit_of = [h.unit for h in self.heads]
        self.pos: list[Tensor] = []
        self.scale: list[tuple[Tensor, Tensor] | None] = []
        for j in range(self.slots):
            if self.blocks is not None:
                at = [self.blocks.index[j][h.sources[j]] for h in self.heads]
                self.pos.append(torch.tensor(at, device=self.device)[:, None])
            sources = [self.datasets[h.unit].sources[h.sources[j]] for h in self.heads]
            if sources[0].mean is None:
                self.scale.append(None)
                continue
            mean, std = (
                torch.from_numpy(np.stack([getattr(s, a) for s in sources]))[:, None].to(self.device)
                for a in ("mean", "std")
            )
            self.scale.append((mean, std))

    def __len__(self) -> int:
        return len(self.datasets[0])

    def batch(self, positions: Sequence[np.ndarray]) -> tuple[list[Tensor], Tensor]:
        """Features ``k x (n, B, H_j)`` and labels ``(n, B)`` of each unit's (sorted) ``positions`` (one per unit)."""
        rows = np.stack([ds.rows[p] for ds, p in zip(self.datasets, positions, strict=True)])[self.unit_of]  # (n, B)
        labels = np.stack([ds.labels[p] for ds, p in zip(self.datasets, positions, strict=True)])[self.unit_of]
        xs = []
        for j in range(self.slots):
            if self.blocks is not None:
                raw = self.blocks.blocks[j][self.pos[j], torch.from_numpy(rows).to(self.device)]  # (n, B, H_j)
            else:
                raw = torch.from_numpy(self._read(j, rows)).to(self.device)
            x = raw.float()  # a fresh tensor: the gather or the read copied the rows
            if (scale := self.scale[j]) is not None:
                x.sub_(scale[0]).div_(scale[1])
            xs.append(x)
        return xs, torch.from_numpy(labels).to(self.device)

    def _read(self, slot: int, rows: np.ndarray) -> np.ndarray:
        """Unscaled rows ``(n, B, H)`` of each head's source in ``slot``, one read per distinct (source, rows)."""
        parts: list[np.ndarray] = []
        done: dict[tuple[int, bytes], int] = {}
        for h, r in zip(self.heads, rows, strict=True):
            key = (h.sources[slot], r.tobytes())
            if key in done:
                parts.append(parts[done[key]])
                continue
            done[key] = len(parts)
            parts.append(self.datasets[h.unit].sources[h.sources[slot]].read_raw(r))
        return np.stack(parts)

    def chunk(self, start: int, stop: int) -> tuple[list[Tensor], Tensor]:
        """Positions ``start:stop`` of every unit, in order (evaluation)."""
        return self.batch([np.arange(start, stop)] * len(self.datasets))

    def keep(self, idx: list[int]) -> None:
        """Keep the heads at positions ``idx`` of the current ones."""
        self.heads = [self.heads[i] for i in idx]
        self._index()
