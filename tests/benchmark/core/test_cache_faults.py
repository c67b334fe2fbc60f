"""The cache writer keeps another writer's chunks, removes torn files and survives a full disk while assembling."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.errors import UserError


def test_starting_over_never_deletes_chunks_another_writer_holds(tmp_path) -> None:
    """Item 1 at the writer: a lone writer or shards keep their chunks; starting over needs the lock alone."""
    from benchmark.core.cache import FeatureKey
    from benchmark.core.cache_writer import CacheWriter

    key = FeatureKey("org/m", "rev", "toy", "0" * 64, "train", "mean", 8, "fp32")
    final = tmp_path / "key"
    feats = np.zeros((2, 2, 3), dtype=np.float32)  # (L+1, n, H)
    for shared in (False, True):
        first = CacheWriter(final, key, n=4, chunk_size=2, shared=shared).open()
        first.write_chunk(0, np.array([0, 1]), feats)
        again = CacheWriter(final, key, n=4, chunk_size=2, shared=shared, start_over=True)
        with pytest.raises(UserError, match="another process is writing|other shards are writing"):
            again.open()
        assert first.chunk_done(0)  # nothing deleted
        first.close()
        with CacheWriter(final, key, n=4, chunk_size=2, shared=shared, start_over=True) as alone:
            assert alone.missing_chunks() == [0, 1]  # with the lock to itself, it starts over


def test_a_rerun_removes_torn_files_of_a_killed_writer_first(tmp_path) -> None:
    """A killed run's chunk_*.npy.tmp (what kept a full disk full) is gone once a writer holds the lock."""
    from benchmark.core.cache import FeatureKey
    from benchmark.core.cache_writer import CacheWriter

    key = FeatureKey("org/m", "rev", "toy", "0" * 64, "train", "mean", 8, "fp32")
    with CacheWriter(tmp_path / "key", key, n=4, chunk_size=2) as w:
        w.write_chunk(0, np.array([0, 1]), np.zeros((2, 2, 3), dtype=np.float32))
    torn = [w.partial / "chunk_00001.npy.tmp", w.partial / "chunk_00001.json.tmp-99999999"]
    for t in torn:
        t.write_bytes(b"x" * 1000)
    with CacheWriter(tmp_path / "key", key, n=4, chunk_size=2) as again:
        assert again.missing_chunks() == [1] and not any(t.exists() for t in torn)


def test_disk_full_while_assembling_removes_the_partial_layer_files(tmp_path, monkeypatch) -> None:
    """Own case: the finish (layer files) hits a full disk; its files go, the chunks stay, a second finish works."""
    import errno

    from benchmark.core import cache_writer
    from benchmark.core.cache import FeatureKey

    key = FeatureKey("org/m", "rev", "toy", "0" * 64, "train", "mean", 8, "fp32")
    feats = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)  # (L+1, n, H)
    w = cache_writer.CacheWriter(tmp_path / "key", key, n=4, chunk_size=2).open()
    w.write_chunk(0, np.array([0, 1]), feats[:, :2])
    w.write_chunk(1, np.array([2, 3]), feats[:, 2:])

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_writer.os, "posix_fallocate", no_space)
    with pytest.raises(UserError, match=r"while assembling the layer files \(2 of 2 chunks done, kept\)"):
        w.finalize(np.array([0, 1, 0, 1]), {})
    assert not list(w.partial.glob("layer_*")) and w.missing_chunks() == []
    monkeypatch.undo()
    final = w.finalize(np.array([0, 1, 0, 1]), {})
    w.close()
    assert np.array_equal(np.load(final / "layer_01.npy"), feats[1].astype(np.float16))
