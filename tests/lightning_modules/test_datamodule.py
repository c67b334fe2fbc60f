"""Streaming DataModule: splits, cross-cache checks, aggregation and scaling, bounded reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_features import make_model, separable_features, write_cache

from benchmark.core.cache import CacheError
from benchmark.core.errors import UserError
from lightning_modules import features
from lightning_modules.datamodule import CachedFeatureDataModule, Selection
from lightning_modules.features import ByteCounter, LayerFile, ShuffledBatchSampler


def _epoch(loader) -> tuple[list[torch.Tensor], torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return [torch.cat(parts) for parts in zip(*xs, strict=True)], torch.cat(ys)


def test_batches_shapes_and_untouched_test_split(tmp_path: Path) -> None:
    a = make_model(tmp_path, "a", n_train=100, n_test=40, hidden=8)
    b = make_model(tmp_path, "b", n_train=100, n_test=40, hidden=12)
    dm = CachedFeatureDataModule([a.select(-1), b.select("mean:last2")], batch_size=16, val_fraction=0.2)
    dm.setup()
    assert dm.input_dims == [8, 12] and dm.num_classes == 2 and dm.label_names == ["c0", "c1"]
    xs, y = next(iter(dm.train_dataloader()))
    assert [x.shape for x in xs] == [(16, 8), (16, 12)] and xs[0].dtype == torch.float32 and y.dtype == torch.int64
    train_rows, val_rows = dm.datasets["train"].rows, dm.datasets["val"].rows
    assert len(train_rows) == 80 and len(val_rows) == 20 and np.intersect1d(train_rows, val_rows).size == 0
    # Validation comes from the train cache, stratified; test is the whole test cache, in order.
    train_labels = np.load(a.train_dir / "labels.npy")
    assert np.bincount(train_labels[val_rows]).tolist() == [10, 10]
    test_x, test_y = _epoch(dm.test_dataloader())
    np.testing.assert_array_equal(test_y.numpy(), np.load(a.test_dir / "labels.npy"))
    assert test_x[0].shape == (40, 8)


def test_each_epoch_visits_every_train_row_once_in_a_new_seeded_order() -> None:
    s1, s2 = ShuffledBatchSampler(23, 5, shuffle=True, seed=3), ShuffledBatchSampler(23, 5, shuffle=True, seed=3)
    e1, e2 = list(s1), list(s1)
    assert sorted(i for b in e1 for i in b) == list(range(23)) and len(e1) == len(s1) == 5
    assert e1 != e2  # a new permutation every epoch
    assert list(s2) == e1 and list(s2) == e2  # ... the same sequence for the same seed
    assert all(b == sorted(b) for b in e1)  # sorted within a batch: one ordered gather per file


def test_aggregation_and_scaling_use_train_part_only(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=60, n_test=30, hidden=6, num_layers=4)
    raw = [np.load(m.train_dir / f"layer_{i:02d}.npy").astype(np.float32) for i in range(5)]
    raw_test = [np.load(m.test_dir / f"layer_{i:02d}.npy").astype(np.float32) for i in range(5)]
    dm = CachedFeatureDataModule([m.select("max:1,3"), m.select("mean:last3")], standardize=False, val_fraction=0.25)
    test_x, _ = _epoch(dm.test_dataloader())
    np.testing.assert_allclose(test_x[0], np.maximum(raw_test[1], raw_test[3]))
    np.testing.assert_allclose(test_x[1], (raw_test[2] + raw_test[3] + raw_test[4]) / 3, rtol=1e-6)

    scaled = CachedFeatureDataModule([m.select(2)], standardize=True, val_fraction=0.25)
    scaled.setup()
    rows = scaled.datasets["train"].rows
    mean, std = raw[2][rows].mean(0), raw[2][rows].std(0)
    train_x, _ = _epoch(scaled.train_dataloader())
    np.testing.assert_allclose(train_x[0].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train_x[0].std(0, unbiased=False), 1, atol=1e-4)
    test_x, _ = _epoch(scaled.test_dataloader())
    np.testing.assert_allclose(test_x[0], (raw_test[2] - mean) / std, atol=1e-4)


def test_reads_only_the_selected_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = make_model(tmp_path, n_train=50, n_test=20, hidden=8, num_layers=5)
    opened: list[str] = []
    init = LayerFile.__init__

    def spy(self: LayerFile, path: Path) -> None:
        opened.append(path.name)
        init(self, path)

    monkeypatch.setattr(LayerFile, "__init__", spy)
    dm = CachedFeatureDataModule([m.select("min:1,4")], batch_size=10)
    _epoch(dm.train_dataloader())
    assert sorted(set(opened)) == ["layer_01.npy", "layer_04.npy"]
    # Bytes: scaler pass + one train epoch over the training part, two float16 layers of width 8.
    n_train = len(dm.datasets["train"])
    assert dm.feature_bytes == 2 * (n_train + n_train) * 8 * 2


def test_worker_reads_are_counted(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=40, n_test=10, hidden=4)
    dm = CachedFeatureDataModule([m.select(-1)], batch_size=10, standardize=False, num_workers=1)
    _epoch(dm.test_dataloader())
    assert dm.feature_bytes == 10 * 4 * 2


def test_layer_file_gathers_runs_slices_and_into_buffers(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=64, n_test=8, hidden=4)
    f = LayerFile(m.train_dir / "layer_03.npy")
    full = np.load(m.train_dir / "layer_03.npy")
    for rows in (np.array([0, 1, 2, 9, 10, 63]), np.array([5]), np.arange(64), np.array([], dtype=np.int64)):
        np.testing.assert_array_equal(f.read(rows), full[rows])
    np.testing.assert_array_equal(f.read(slice(8, 16)), full[8:16])
    out = np.empty((3, 4), dtype=np.float16)
    assert f.read(np.array([2, 4, 6]), out=out) is out
    np.testing.assert_array_equal(out, full[[2, 4, 6]])


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_a_whole_layer_leaves_rss_flat(tmp_path: Path) -> None:
    feats = np.random.default_rng(0).normal(size=(2, 16384, 512)).astype(np.float32)  # 16 MiB per float16 layer
    path = write_cache(tmp_path, "big", "train", feats, np.arange(16384) % 2)
    f = LayerFile(path / "layer_01.npy")
    before = _rss_file_kib()
    for batch in np.array_split(np.random.default_rng(1).permutation(16384), 160):
        f.read(np.sort(batch))
    assert _rss_file_kib() - before < 2048  # KiB: nothing of the 16 MiB stays resident


def test_byte_counter_is_shared_with_spawned_workers() -> None:
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401 - registers shared-memory tensor reductions

    c = ByteCounter()
    c.add(5)
    clone = pickle.loads(ForkingPickler.dumps(c))  # how a spawned DataLoader worker receives it
    clone.add(7)
    assert c.total == 12


def _pair(tmp_path: Path, **other: object) -> tuple[Selection, Selection]:
    feats, labels = separable_features(30, 4, 2, 2, seed=0)
    a_tr = write_cache(tmp_path, "a", "train", feats[:, :20], labels[:20])
    a_te = write_cache(tmp_path, "a", "test", feats[:, 20:], labels[20:])
    o_feats, o_labels = other.get("feats", feats[:, :20]), other.get("labels", labels[:20])
    b_tr = write_cache(
        tmp_path,
        "b",
        "train",
        o_feats,
        o_labels,
        texts_id=other.get("texts_id"),  # type: ignore[arg-type]
        num_classes=other.get("num_classes", 2),
    )  # type: ignore[arg-type]
    b_te = write_cache(tmp_path, "b", "test", feats[:, 20:], labels[20:])
    return Selection("a", -1, a_tr, a_te), Selection("b", -1, b_tr, b_te)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"texts_id": "other texts"}, "different texts"),
        ({"labels": np.zeros(20, dtype=np.int64)}, "different labels"),
        ({"feats": np.zeros((3, 15, 4), np.float32), "labels": np.arange(15) % 2}, "20 vs 15 rows"),
        ({"num_classes": 3}, r"different label names \['c0', 'c1'\] vs \['c0', 'c1', 'c2'\]"),
    ],
)
def test_mismatched_caches_name_both(tmp_path: Path, change: dict, what: str) -> None:
    a, b = _pair(tmp_path, **change)
    with pytest.raises(CacheError, match=rf"train features of 'a' \(.*\) and 'b' \(.*\).*{what}"):
        CachedFeatureDataModule([a, b]).setup()


def test_missing_cache_and_swapped_splits(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=20, n_test=10)
    with pytest.raises(CacheError, match="no test features for 'fake'.*layerfuse extract --model fake"):
        CachedFeatureDataModule([Selection("fake", -1, m.train_dir, tmp_path / "nowhere")]).setup()
    with pytest.raises(CacheError, match="holds the training texts"):
        CachedFeatureDataModule([Selection("fake", -1, m.train_dir, m.train_dir)]).setup()
    with pytest.raises(UserError, match=r"valid layers are 0\.\.3"):
        CachedFeatureDataModule([m.select(7)]).setup()


def test_own_validation_split_is_used_whole(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=40, n_test=10)
    feats, labels = separable_features(12, 8, 3, 2, seed=5)
    val_dir = write_cache(tmp_path, "fake", "validation", feats, labels)
    dm = CachedFeatureDataModule([Selection("fake", -1, m.train_dir, m.test_dir, val_dir)])
    dm.setup()
    assert len(dm.datasets["train"]) == 40 and len(dm.datasets["val"]) == 12
    _, val_y = _epoch(dm.val_dataloader())
    np.testing.assert_array_equal(val_y.numpy(), labels)
    with pytest.raises(CacheError, match="every selection names a validation cache"):
        CachedFeatureDataModule([Selection("fake", -1, m.train_dir, m.test_dir, val_dir), m.select(-1)])


@pytest.mark.parametrize(
    ("val_texts", "test_classes", "error"),
    [
        (
            "test",
            2,
            r"the val cache of 'fake' \(.*validation.*\) holds the test texts: point val_dir at the validation split",
        ),
        ("train", 2, r"the val cache of 'fake' \(.*validation.*\) holds the training texts"),
        ("validation", 3, r"train \(.*\) and test \(.*\) caches of 'fake' have different label names"),
    ],
)
def test_own_validation_and_test_caches_are_checked_against_each_other(
    tmp_path: Path, val_texts: str, test_classes: int, error: str
) -> None:
    feats, labels = separable_features(40, 4, 1, 2, seed=0)
    train = write_cache(tmp_path, "fake", "train", feats[:, :20], labels[:20])
    val = write_cache(tmp_path, "fake", "validation", feats[:, 20:30], labels[20:30], texts_id=val_texts)
    test = write_cache(tmp_path, "fake", "test", feats[:, 30:], labels[30:], num_classes=test_classes)
    with pytest.raises(CacheError, match=error):
        CachedFeatureDataModule([Selection("fake", -1, train, test, val)]).setup()


def test_stats_are_read_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "STATS_CHUNK_ROWS", 7)
    m = make_model(tmp_path, n_train=50, n_test=10, hidden=4)
    sizes: list[int] = []
    read = LayerFile.read

    def spy(self: LayerFile, rows: np.ndarray) -> np.ndarray:
        out = read(self, rows)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(LayerFile, "read", spy)
    CachedFeatureDataModule([m.select(-1)], val_fraction=0.1).setup()
    assert max(sizes) == 7 and sum(sizes) == 45
