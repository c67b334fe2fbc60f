"""Synthetic per-layer feature caches for training tests, written through the real ``CacheWriter``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.cache import FeatureKey
from benchmark.core.cache_writer import CacheWriter
from lightning_modules.datamodule import Selection


def write_cache(
    root: Path,
    model: str,
    split: str,
    feats: np.ndarray,
    labels: np.ndarray,
    texts_id: str | None = None,
    num_classes: int | None = None,
) -> Path:
    """Write ``feats`` ``(L+1, N, H)`` and ``labels`` ``(N,)`` as a complete cache directory; return its path.

    ``texts_id`` stands in for the texts (its hash becomes ``texts_sha256``); default: ``"<split>"``, so
    every model's cache of one split covers "the same texts".
    """
    texts_sha = hashlib.sha256((texts_id or split).encode()).hexdigest()
    key = FeatureKey(model, "test", "synthetic", "0" * 64, split, "mean", 16, "fp32")
    names = [f"c{i}" for i in range(num_classes or int(labels.max()) + 1)]
    final = root / key.relpath()
    with CacheWriter(final, key, n=feats.shape[1], chunk_size=max(1, feats.shape[1] // 2)) as w:
        for i in w.missing_chunks():
            rows = np.arange(i * w.chunk_size, min((i + 1) * w.chunk_size, feats.shape[1]))
            w.write_chunk(i, rows, feats[:, rows])
        w.finalize(labels, {"label_names": names, "texts_sha256": texts_sha, "extract_ms_per_sample": 1.0})
    return final


@dataclass(frozen=True)
class SyntheticModel:
    """A fake model's train and test caches."""

    name: str
    train_dir: Path
    test_dir: Path
    num_layers: int

    def select(self, layer: str | int = -1) -> Selection:
        """Selection of this model at ``layer``."""
        return Selection(self.name, layer, self.train_dir, self.test_dir)


def separable_features(
    n: int, hidden: int, num_layers: int, num_classes: int, seed: int, signal: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(L+1, n, H)`` features and labels; layer l carries class signal of strength ``signal * l / L``.

    Layer 0 is pure noise, the last layer is linearly separable with margin ~``signal``.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    centers = rng.normal(size=(num_classes, hidden))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    feats = rng.normal(size=(num_layers + 1, n, hidden)) * 0.5
    for layer in range(num_layers + 1):
        feats[layer] += signal * (layer / max(num_layers, 1)) * centers[labels]
    return feats.astype(np.float32), labels.astype(np.int64)


def make_model(
    root: Path,
    name: str = "fake",
    n_train: int = 200,
    n_test: int = 100,
    hidden: int = 8,
    num_layers: int = 3,
    num_classes: int = 2,
    seed: int = 0,
    signal: float = 3.0,
    random_labels: bool = False,
) -> SyntheticModel:
    """Write train and test caches of a fake model whose upper layers separate the classes."""
    feats, labels = separable_features(n_train + n_test, hidden, num_layers, num_classes, seed, signal)
    if random_labels:
        labels = np.random.default_rng(seed + 1).permutation(labels)
    train = write_cache(root, name, "train", feats[:, :n_train], labels[:n_train], num_classes=num_classes)
    test = write_cache(root, name, "test", feats[:, n_train:], labels[n_train:], num_classes=num_classes)
    return SyntheticModel(name, train, test, num_layers)
