"""The cache's writer: an extraction's resumable chunks under ``<dir>.partial/``, its lock, and the atomic finish.

While extracting, work goes to ``<dir>.partial/`` as ``chunk_XXXXX.npy`` files of shape (L+1, n, H) over
the length-sorted order (each written atomically), so a killed run resumes without redoing a chunk.
Finalising assembles the layer files inside ``.partial`` and renames it into place in one ``os.replace``.
The layout it writes, and the reader, are ``benchmark.core.cache``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.cache import (
    FEATURE_DTYPE,
    FORMAT_VERSION,
    CacheError,
    FeatureKey,
    atomic_save_npy,
    atomic_write_bytes,
    layer_file,
    npy_shape,
)
from benchmark.core.errors import UserError
from benchmark.core.faults import NO_SPACE, RERUN_AFTER_SPACE, free_bytes, human
from benchmark.core.locks import CacheLock

log = logging.getLogger(__name__)


def partial_dir(final_dir: str | Path) -> Path:
    """Where an unfinished extraction of ``final_dir`` keeps its chunks."""
    final_dir = Path(final_dir)
    return final_dir.with_name(final_dir.name + ".partial")


def recorded_state(final_dir: str | Path, key: FeatureKey, n: int) -> dict[str, Any] | None:
    """``partial.json`` of an unfinished extraction of the same key and n (None: nothing, or another run's leftovers).

    It holds the chunk size and batching the run's chunks were made with (``batching`` may be missing: partial runs
    written before it was recorded).
    """
    try:
        state = json.loads((partial_dir(final_dir) / "partial.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("chunk_size"), int) or state["chunk_size"] < 1:
        return None
    if {k: state.get(k) for k in ("key", "n")} != {"key": asdict(key), "n": n}:
        return None
    return state


def recorded_batching(final_dir: str | Path, key: FeatureKey, n: int) -> dict[str, Any] | None:
    """Batching settings recorded by an unfinished extraction of the same key and n (any chunk size).

    Returns:
        None when there is no such partial run (nothing, or leftovers of another run), else the recorded settings
        (an empty dict for partial runs written before settings were recorded).
    """
    state = recorded_state(final_dir, key, n)
    if state is None:
        return None
    batching = state.get("batching")
    return dict(batching) if isinstance(batching, dict) else {}


def _lock_file(final_dir: Path) -> Path:
    return final_dir.with_name(final_dir.name + ".lock")


def check_not_busy(final_dir: str | Path) -> None:
    """Refuse early (before a model loads or a run opens) when a lone writer holds the lock of ``final_dir``.

    Shards of one extraction hold it shared, so a joining shard passes; the writer's own lock decides the rest.

    Raises:
        CacheError: another process is writing the directory on its own.
    """
    lock = CacheLock(_lock_file(Path(final_dir)))
    if not lock.path.is_file():
        return
    if not lock.try_acquire(exclusive=False):
        raise CacheError(f"another process is writing {final_dir}; let it finish (or stop it), then rerun this command")
    lock.release()


class CacheWriter:
    """Write one key directory atomically, in resumable chunks.

    Usage::

        with CacheWriter(final_dir, key, n=N, chunk_size=C) as w:
            for i in w.missing_chunks(): w.write_chunk(i, order[i*C:(i+1)*C], feats)  # feats (L+1, n_i, H)
            w.finalize(labels, meta)

    ``batching`` (e.g. batch size, token budget, device) is recorded with the first chunk; a resumed run gets the
    recorded settings back in ``self.batching`` and must use them. ``start_over`` drops an unfinished run's chunks
    (``--overwrite always``, another device); like every change to the directory it happens only under the lock,
    so it never deletes the chunks of a run still in progress in another process (that one is refused instead).

    Chunk ``i`` covers rows ``order[i*C:(i+1)*C]`` of a fixed processing order; the row indices are stored
    beside the features, so the final files are in original order whatever the processing order was.

    ``shared=True`` is for one shard of a sharded extraction: shards hold the lock shared while each writes its
    own chunks, refuse (never clear) a partial folder of other settings, since its chunks may be another shard's
    work, and ``claim_finish`` lets exactly one of them, holding the lock exclusively, finalise.
    """

    def __init__(
        self,
        final_dir: str | Path,
        key: FeatureKey,
        n: int,
        chunk_size: int,
        batching: dict[str, Any] | None = None,
        shared: bool = False,
        start_over: bool = False,
    ) -> None:
        self.final_dir = Path(final_dir)
        self.partial = partial_dir(self.final_dir)
        self.key = key
        self.n = n
        self.chunk_size = chunk_size
        self.num_chunks = (n + chunk_size - 1) // chunk_size
        self.batching = dict(batching or {})
        self.shared = shared
        self.start_over = start_over
        self._lock = CacheLock(_lock_file(self.final_dir))

    def open(self) -> CacheWriter:
        """Take the lock and lay out (or resume) the partial folder; ``with CacheWriter(...)`` calls it."""
        if not self.shared:
            self._lock.acquire_exclusive()
            self._clear_if_starting_over()
            self._prepare()
            return self
        alone = self._lock.wait_shared_or_exclusive()
        if self.start_over:
            if not alone:  # the other shards are writing: their chunks stay
                self._lock.release()
                raise UserError(
                    f"other shards are writing {self.partial}: starting over would delete their chunks; let them "
                    "finish (or stop them), then rerun"
                )
            self._clear_if_starting_over()
        recorded = recorded_batching(self.final_dir, self.key, self.n)
        if recorded is None and (self.partial.exists() or not alone):
            self._lock.release()  # never clear chunks that may be another shard's work
            raise UserError(
                f"the unfinished extraction at {self.partial} was made with another key or row count than this "
                "shard's; give every shard the same settings, or delete that folder to start over"
            )
        if alone:
            self._prepare()
            if not self._lock.try_acquire(exclusive=False):
                raise UserError(f"another process took the lock of {self.final_dir} while this shard set it up")
        else:
            self._adopt()
        return self

    def _adopt(self) -> None:
        """Continue the unfinished run's chunking and batching, whatever this run asked for.

        Chunk ``i`` covers a fixed slice of the processing order of the chunk size it was made with, and batching
        changes the float rounding: resuming with the recorded ones is what makes the result byte-identical to one
        uninterrupted run (``extract.chunk_size`` is not part of the cache key for that reason).
        """
        state = recorded_state(self.final_dir, self.key, self.n)
        if state is None:
            return
        if state["chunk_size"] != self.chunk_size:
            log.info(
                "%s: resuming with the chunk size of the unfinished run (%d; this run asked for %d)",
                self.final_dir,
                state["chunk_size"],
                self.chunk_size,
            )
            self.chunk_size = int(state["chunk_size"])
            self.num_chunks = (self.n + self.chunk_size - 1) // self.chunk_size
        batching = state.get("batching")
        if isinstance(batching, dict) and batching:
            self.batching = dict(batching)

    def _clear_if_starting_over(self) -> None:
        if self.start_over:  # only ever with the lock held exclusively
            shutil.rmtree(self.partial, ignore_errors=True)

    def close(self) -> None:
        """Release the lock (finished or not); chunks written so far stay for a rerun."""
        self._lock.release()

    def __enter__(self) -> CacheWriter:
        return self.open()

    def _prepare(self) -> None:
        ident_file = self.partial / "partial.json"
        if self.partial.exists():
            if recorded_state(self.final_dir, self.key, self.n) is None:  # leftovers of another key: start over
                shutil.rmtree(self.partial)
            else:
                self._adopt()
        if not self.partial.exists():
            self.partial.mkdir(parents=True)
            ident = {**self._ident(self.key, self.n, self.chunk_size), "batching": self.batching}
            atomic_write_bytes(ident_file, json.dumps(ident).encode())
        self._remove_torn()

    def _remove_torn(self) -> None:
        """Delete half-written files of a killed or failed run (only ever with the lock held exclusively).

        On a full disk they are what keeps it full: a rerun frees their space before it writes anything.
        """
        for torn in self.partial.glob("*.tmp*"):
            torn.unlink(missing_ok=True)

    @staticmethod
    def _ident(key: FeatureKey, n: int, chunk_size: int) -> dict[str, Any]:
        return {"key": asdict(key), "n": n, "chunk_size": chunk_size}

    def __exit__(self, *exc: object) -> None:
        self.close()

    def claim_finish(self) -> bool:
        """True when this writer may finalise now: it holds the lock exclusively and every chunk is written.

        A shard first gives up its shared lock; while another shard still holds one, or chunks of shards that
        have not run yet are missing, it returns False and leaves finishing to the last shard. Releasing before
        asking (rather than converting the lock) means the last shard to release always gets it, also where a
        failed conversion would keep the shared lock (``flock`` emulated by POSIX locks on NFS).
        """
        if self.shared:
            self._lock.release()
            if not self._lock.try_acquire(exclusive=True):
                return False
        return self.partial.is_dir() and not self.missing_chunks()

    def _chunk(self, i: int) -> Path:
        return self.partial / f"chunk_{i:05d}.npy"

    def chunk_done(self, i: int) -> bool:
        """True when chunk ``i`` was fully written by this or an earlier run."""
        return npy_shape(self._chunk(i)) is not None and npy_shape(self._chunk(i).with_suffix(".idx.npy")) is not None

    def missing_chunks(self) -> list[int]:
        """Chunk indices still to compute."""
        return [i for i in range(self.num_chunks) if not self.chunk_done(i)]

    def write_chunk(
        self,
        i: int,
        rows: np.ndarray,
        feats: np.ndarray,
        stats: dict[str, float] | None = None,
        worker: str | None = None,
    ) -> None:
        """Atomically store chunk ``i``: ``rows`` (n_i,) original indices, ``feats`` (L+1, n_i, H).

        ``stats`` (e.g. seconds, tokens) are kept beside the chunk and summed into meta.json, so the
        throughput recorded for a resumed extraction covers every run that contributed; ``worker`` names the
        process that computed it, for the per-worker sums of ``worker_stats``.
        """
        if feats.shape[1] != len(rows):
            raise ValueError(f"chunk {i}: {feats.shape[1]} feature rows for {len(rows)} indices")
        record: dict[str, Any] = {**(stats or {}), **({"worker": worker} if worker else {})}
        try:
            atomic_write_bytes(self._chunk(i).with_suffix(".json"), json.dumps(record).encode())
            atomic_save_npy(self._chunk(i).with_suffix(".idx.npy"), np.asarray(rows, dtype=np.int64))
            atomic_save_npy(self._chunk(i), np.ascontiguousarray(feats, dtype=FEATURE_DTYPE))
        except OSError as err:
            if err.errno not in NO_SPACE:
                raise
            for torn in self.partial.glob(f"chunk_{i:05d}*.tmp*"):  # this chunk's own half-written files
                torn.unlink(missing_ok=True)
            row_bytes = feats.shape[0] * feats.shape[2] * np.dtype(FEATURE_DTYPE).itemsize
            raise self._disk_full(f"writing chunk {i}", row_bytes) from None

    def _disk_full(self, doing: str, row_bytes: int) -> CacheError:
        """The one-line error of a full disk: what is left to write, and what the finish needs on top."""
        done = self.num_chunks - len(self.missing_chunks())
        rows_left = sum(
            len(range(i * self.chunk_size, min((i + 1) * self.chunk_size, self.n))) for i in self.missing_chunks()
        )
        # The rows still to extract, plus the layer files that finishing assembles while the chunks still exist.
        need = row_bytes * (rows_left + self.n)
        free = free_bytes(self.partial)
        has = f", {human(free)} free" if free is not None else ""
        return CacheError(
            f"no space left on the device of {self.partial} while {doing} ({done} of {self.num_chunks} chunks done, "
            f"kept): finishing needs about {human(need)} more{has}; {RERUN_AFTER_SPACE}"
        )

    def _chunk_records(self) -> Iterator[dict[str, Any]]:
        for i in range(self.num_chunks):
            f = self._chunk(i).with_suffix(".json")
            yield dict(json.loads(f.read_text())) if f.is_file() else {}

    @staticmethod
    def _add(total: dict[str, float], record: dict[str, Any]) -> None:
        for k, v in record.items():
            if isinstance(v, int | float):
                total[k] = total.get(k, 0) + v

    def chunk_stats(self) -> dict[str, float]:
        """Sum of the ``stats`` of all written chunks."""
        total: dict[str, float] = {}
        for record in self._chunk_records():
            self._add(total, record)
        return total

    def worker_stats(self) -> dict[str, dict[str, float]]:
        """The sums of ``chunk_stats`` per worker that wrote chunks, with their count as ``chunks``."""
        out: dict[str, dict[str, float]] = {}
        for record in self._chunk_records():
            if "worker" in record:
                total = out.setdefault(str(record["worker"]), {"chunks": 0})
                self._add(total, {**record, "chunks": 1})
        return out

    def _assemble(self, num_states: int, hidden: int) -> None:
        for layer in range(num_states):
            out_path = self.partial / layer_file(layer)
            out = np.lib.format.open_memmap(out_path, mode="w+", dtype=FEATURE_DTYPE, shape=(self.n, hidden))
            # The memmap's file is sparse: writing its pages on a full disk would kill the process (SIGBUS).
            # Reserving its blocks first turns a full disk into an OSError here instead.
            with open(out_path, "r+b") as fh:
                os.posix_fallocate(fh.fileno(), 0, out_path.stat().st_size)
            for i in range(self.num_chunks):
                rows = np.load(self._chunk(i).with_suffix(".idx.npy"))
                out[rows] = np.load(self._chunk(i), mmap_mode="r")[layer]
            out.flush()
            del out

    def finalize(self, labels: np.ndarray, meta: dict[str, Any]) -> Path:
        """Assemble layer files in original order, write labels and meta.json last, and move into place."""
        missing = self.missing_chunks()
        if missing:
            raise RuntimeError(f"cannot finalise {self.final_dir}: chunks {missing[:5]} missing")
        first = np.load(self._chunk(0), mmap_mode="r")
        num_states, _, hidden = first.shape
        try:
            self._assemble(num_states, hidden)
            atomic_save_npy(self.partial / "labels.npy", np.asarray(labels, dtype=np.int64))
        except OSError as err:
            if err.errno not in NO_SPACE:
                raise
            for f in (*self.partial.glob("layer_*.npy"), *self.partial.glob("*.tmp*")):
                f.unlink(missing_ok=True)  # assembled again by the rerun
            raise self._disk_full(
                "assembling the layer files", num_states * hidden * np.dtype(FEATURE_DTYPE).itemsize
            ) from None
        for i in range(self.num_chunks):
            for suffix in (".npy", ".idx.npy", ".json"):
                self._chunk(i).with_suffix(suffix).unlink(missing_ok=True)
        for torn in self.partial.glob("*.tmp*"):  # half-written files of killed runs
            torn.unlink()
        (self.partial / "partial.json").unlink()
        files = {p.name: p.stat().st_size for p in sorted(self.partial.iterdir()) if p.suffix == ".npy"}
        full = {
            "format_version": FORMAT_VERSION,
            **asdict(self.key),
            "key_sha256": self.key.sha256(),
            "n": self.n,
            "hidden_size": int(hidden),
            "num_layers": int(num_states - 1),
            **meta,
            "files": files,
            "complete": True,
        }
        atomic_write_bytes(self.partial / "meta.json", json.dumps(full, indent=2, sort_keys=True).encode())
        if self.final_dir.exists():  # --overwrite always: move the old entry aside first, then drop it
            trash = self.final_dir.with_name(self.final_dir.name + ".old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(self.final_dir, trash)
            shutil.rmtree(trash)
        os.replace(self.partial, self.final_dir)
        return self.final_dir
