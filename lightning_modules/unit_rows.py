"""``UnitRows``: one split's batches for stacked heads, each head reading its own layer at its own unit's rows.

A head of a batched sweep is (unit, layer): the unit (fold, seed) says which rows and which scaler (the
fold's training-part statistics), the layer which file. Resident: every row of the cache's swept layers is
read once into a ``(L, N, H)`` block in the files' dtype (float16, half the bytes of float32 and faster to
gather: measured 1.4 vs 2.6 ms per 31 x 100-row batch) and a batch is a gather from it. Streamed: each batch
is read from the layer files, one read per distinct (layer, rows). Same values either way, and the same IEEE
operations as ``SelectionFeatures.read`` (cast, subtract the mean, divide by the std), so bit-equal to a fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_modules.features import CachedFeatureDataset


class UnitRows:
    """Batches ``(n, B, H)`` of one split for heads ``i`` = (``unit_of[i]``, ``layer_of[i]``).

    Args:
        datasets: The split's dataset of each unit (its rows and scalers; sources are the swept layers, in order).
        unit_of: Each head's unit (index into ``datasets``).
        layer_of: Each head's layer (index into the datasets' sources).
        resident: Hold every row of the swept layers in memory (see the module docstring).
        device: Where batches go.
        share: Rows of another split of the same cache (train, for validation folds of train): its block is reused.
    """

    def __init__(
        self,
        datasets: Sequence[CachedFeatureDataset],
        unit_of: list[int],
        layer_of: list[int],
        resident: bool,
        device: torch.device,
        share: UnitRows | None = None,
    ) -> None:
        self.datasets, self.device = list(datasets), device
        self.unit_of, self.layer_of = list(unit_of), list(layer_of)
        first = self.datasets[0].sources
        self.files = [src.files[0] for src in first]  # every unit reads the same cache files
        self.counter = first[0].counter
        self.block: Tensor | None = None
        if share is not None and [f.path for f in share.files] == [f.path for f in self.files]:
            self.block = share.block
        elif resident:
            n, width = self.files[0].shape
            raw = np.empty((len(self.files), n, width), dtype=self.files[0].dtype)  # (L, N, H)
            for i, f in enumerate(self.files):
                f.read(slice(None), out=raw[i])
            self.counter.add(raw.nbytes)
            self.block = torch.from_numpy(raw).to(device)
        self._scales()

    def _scales(self) -> None:
        """Each head's mean and std ``(n, 1, H)`` (None when the features are not standardised)."""
        sources = [self.datasets[u].sources[li] for u, li in zip(self.unit_of, self.layer_of, strict=True)]
        if sources[0].mean is None:
            self.mean = self.std = None
            return
        self.mean, self.std = (
            torch.from_numpy(np.stack([getattr(s, a) for s in sources]))[:, None].to(self.device)
            for a in ("mean", "std")
        )

    def __len__(self) -> int:
        return len(self.datasets[0])

    def batch(self, positions: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        """Features ``(n, B, H)`` and labels ``(n, B)`` of each unit's (sorted) ``positions`` (one array per unit)."""
        rows = np.stack([ds.rows[p] for ds, p in zip(self.datasets, positions, strict=True)])[self.unit_of]  # (n, B)
        labels = np.stack([ds.labels[p] for ds, p in zip(self.datasets, positions, strict=True)])[self.unit_of]
        if self.block is not None:
            layer = torch.tensor(self.layer_of, device=self.device)[:, None]  # (n, 1)
            raw = self.block[layer, torch.from_numpy(rows).to(self.device)]  # (n, B, H)
        else:
            raw = torch.from_numpy(self._read(rows)).to(self.device)
        x = raw.float()
        if self.mean is not None and self.std is not None:
            x.sub_(self.mean).div_(self.std)
        return x, torch.from_numpy(labels).to(self.device)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``(n, B)`` of each head's layer file, one read per distinct (layer, rows)."""
        out = np.empty((len(rows), rows.shape[1], self.files[0].shape[1]), dtype=self.files[0].dtype)
        done: dict[tuple[int, bytes], int] = {}
        for i, (li, r) in enumerate(zip(self.layer_of, rows, strict=True)):
            key = (li, r.tobytes())
            if key in done:
                out[i] = out[done[key]]
                continue
            self.files[li].read(r, out=out[i])
            self.counter.add(out[i].nbytes)
            done[key] = i
        return out

    def chunk(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Positions ``start:stop`` of every unit, in order (evaluation)."""
        return self.batch([np.arange(start, stop)] * len(self.datasets))

    def keep(self, idx: list[int]) -> None:
        """Keep the heads at positions ``idx`` of the current ones."""
        self.unit_of = [self.unit_of[i] for i in idx]
        self.layer_of = [self.layer_of[i] for i in idx]
        self._scales()
