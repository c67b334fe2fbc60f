"""The per-layer feature cache: key, directory layout, atomic resumable writer, validated reader.

Layout of one complete key directory (STYLE G8)::

    <cache_dir>/<org>__<model>/<revision>/<dataset>-<data12>/<split>/<pooling>-L<max_length>-<dtype>/
        layer_00.npy ... layer_LL.npy   (N, H) float16, layer 00 = embeddings; opened with mmap
        labels.npy                      (N,) int64
        meta.json                       written last; its presence with "complete": true means done

While extracting, work goes to ``<dir>.partial/`` as ``chunk_XXXXX.npy`` files of shape (L+1, n, H) over
the length-sorted order (each written atomically), so a killed run resumes without redoing a chunk.
Finalising assembles the layer files inside ``.partial`` and renames it into place in one ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.locks import CacheLock

FORMAT_VERSION = 1
FEATURE_DTYPE = np.float16


class CacheError(UserError):
    """A cache directory that is missing, partial or corrupt."""


def layer_file(layer: int) -> str:
    """File name of one layer's features."""
    return f"layer_{layer:02d}.npy"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


@dataclass(frozen=True, slots=True)
class FeatureKey:
    """Everything that determines the bytes of a cache entry."""

    model_id: str
    revision: str
    dataset: str
    data_sha256: str
    split: str
    pooling: str
    max_length: int
    dtype: str

    def relpath(self) -> Path:
        """Directory of this key relative to the cache root."""
        model = "__".join(_slug(p) for p in self.model_id.strip("/").split("/")[-2:])
        return Path(
            model,
            _slug(self.revision),
            f"{_slug(self.dataset)}-{self.data_sha256[:12]}",
            _slug(self.split),
            f"{_slug(self.pooling)}-L{self.max_length}-{_slug(self.dtype)}",
        )

    def sha256(self) -> str:
        """Hash of the canonical JSON of all key fields."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def key_dir(cache_dir: str | Path, key: FeatureKey) -> Path:
    """Absolute-or-relative directory of ``key`` under ``cache_dir``."""
    return Path(cache_dir) / key.relpath()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a torn one (also across processes)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """Shape from the .npy header, or None when the file is missing, truncated or not an array."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    return tuple(arr.shape)


def validate(path: str | Path) -> dict[str, Any]:
    """Return the meta of a complete, intact cache directory.

    Checks meta.json is complete and parses, and that every file it lists exists with the recorded size
    and shape (cheap: headers and sizes only, so it runs on every open).

    Raises:
        CacheError: naming the directory and what is wrong.
    """
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise CacheError(f"no complete cache at {path} (meta.json missing)")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CacheError(
            f"cache {path}: meta.json is corrupt; delete the folder or re-extract with --overwrite always"
        ) from None
    if not isinstance(meta, dict) or not meta.get("complete") or meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"cache {path}: meta.json is incomplete or of another format version; re-extract with --overwrite always"
        )
    try:  # a meta.json that parses can still lack fields or hold the wrong types (hand edits, other tools)
        n, h, num_layers = int(meta["n"]), int(meta["hidden_size"]), int(meta["num_layers"])
        files = {str(name): int(size) for name, size in meta["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CacheError(
            f"cache {path}: meta.json lacks n, hidden_size, num_layers or files; re-extract with --overwrite always"
        ) from None
    for name, size in files.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise CacheError(f"cache {path}: {name} is missing or truncated; re-extract with --overwrite always")
    for layer in range(num_layers + 1):
        if _npy_shape(path / layer_file(layer)) != (n, h):
            raise CacheError(
                f"cache {path}: {layer_file(layer)} does not have shape ({n}, {h}); re-extract with --overwrite always"
            )
    if _npy_shape(path / "labels.npy") != (n,):
        raise CacheError(f"cache {path}: labels.npy does not have shape ({n},); re-extract with --overwrite always")
    return dict(meta)


def is_complete(path: str | Path) -> bool:
    """True when ``path`` holds a complete, intact cache."""
    try:
        validate(path)
    except CacheError:
        return False
    return True


class FeatureCache:
    """Read side of one complete cache directory; layers are memory-mapped, never loaded whole.

    Args:
        path: A key directory.

    Raises:
        CacheError: if the directory is not a complete, intact cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = validate(self.path)

    @property
    def n(self) -> int:
        """Number of texts."""
        return int(self.meta["n"])

    @property
    def hidden_size(self) -> int:
        """Feature width H."""
        return int(self.meta["hidden_size"])

    @property
    def num_layers(self) -> int:
        """Transformer layers L; valid layer indices are 0..L (and -1..-(L+1))."""
        return int(self.meta["num_layers"])

    @property
    def label_names(self) -> list[str]:
        """Label names; label i is ``label_names[i]``."""
        return list(self.meta["label_names"])

    @property
    def texts_sha256(self) -> str:
        """Hash of the ordered texts."""
        return str(self.meta["texts_sha256"])

    def layer_index(self, layer: int) -> int:
        """Normalise a possibly negative layer index, or raise naming the valid range."""
        total = self.num_layers + 1
        if not -total <= layer < total:
            raise CacheError(
                f"layer {layer} is out of range for {self.meta['model_id']}: valid 0..{self.num_layers} or -1..-{total}"
            )
        return layer % total

    def layer(self, layer: int) -> np.ndarray:
        """Memory-mapped ``(N, H)`` float16 features of one layer."""
        return cast(np.ndarray, np.load(self.path / layer_file(self.layer_index(layer)), mmap_mode="r"))

    def labels(self) -> np.ndarray:
        """``(N,)`` int64 labels."""
        return cast(np.ndarray, np.load(self.path / "labels.npy"))


def partial_dir(final_dir: str | Path) -> Path:
    """Where an unfinished extraction of ``final_dir`` keeps its chunks."""
    final_dir = Path(final_dir)
    return final_dir.with_name(final_dir.name + ".partial")


def recorded_batching(final_dir: str | Path, key: FeatureKey, n: int, chunk_size: int) -> dict[str, Any] | None:
    """Batching settings recorded by an unfinished extraction of the same key, n and chunk size.

    Returns:
        None when there is no such partial run (nothing, or leftovers of another run), else the recorded settings
        (an empty dict for partial runs written before settings were recorded).
    """
    try:
        state = json.loads((partial_dir(final_dir) / "partial.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(state, dict) or {k: state.get(k) for k in ("key", "n", "chunk_size")} != CacheWriter._ident(
        key, n, chunk_size
    ):
        return None
    batching = state.get("batching")
    return dict(batching) if isinstance(batching, dict) else {}


class CacheWriter:
    """Write one key directory atomically, in resumable chunks.

    Usage::

        with CacheWriter(final_dir, key, n=N, chunk_size=C) as w:
            for i in w.missing_chunks(): w.write_chunk(i, order[i*C:(i+1)*C], feats)  # feats (L+1, n_i, H)
            w.finalize(labels, meta)

    ``batching`` (e.g. batch size, token budget, device) is recorded with the first chunk; a resumed run gets the
    recorded settings back in ``self.batching`` and must use them.

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
    ) -> None:
        self.final_dir = Path(final_dir)
        self.partial = partial_dir(self.final_dir)
        self.key = key
        self.n = n
        self.chunk_size = chunk_size
        self.num_chunks = (n + chunk_size - 1) // chunk_size
        self.batching = dict(batching or {})
        self.shared = shared
        self._lock = CacheLock(self.final_dir.with_name(self.final_dir.name + ".lock"))

    def open(self) -> CacheWriter:
        """Take the lock and lay out (or resume) the partial folder; ``with CacheWriter(...)`` calls it."""
        if not self.shared:
            self._lock.acquire_exclusive()
            self._prepare()
            return self
        alone = self._lock.wait_shared_or_exclusive()
        recorded = recorded_batching(self.final_dir, self.key, self.n, self.chunk_size)
        if recorded is None and (self.partial.exists() or not alone):
            self._lock.release()  # never clear chunks that may be another shard's work
            raise UserError(
                f"the unfinished extraction at {self.partial} was made with another chunk size or key than this "
                "shard's; give every shard the same settings, or delete that folder to start over"
            )
        if alone:
            self._prepare()
            if not self._lock.try_acquire(exclusive=False):
                raise UserError(f"another process took the lock of {self.final_dir} while this shard set it up")
        elif recorded:
            self.batching = recorded
        return self

    def close(self) -> None:
        """Release the lock (finished or not); chunks written so far stay for a rerun."""
        self._lock.release()

    def __enter__(self) -> CacheWriter:
        return self.open()

    def _prepare(self) -> None:
        ident_file = self.partial / "partial.json"
        if self.partial.exists():
            recorded = recorded_batching(self.final_dir, self.key, self.n, self.chunk_size)
            if recorded is None:  # leftovers of a different run (other chunk size or key): start over
                shutil.rmtree(self.partial)
            elif recorded:
                # Chunks already written were batched this way; batching changes the float rounding, so the
                # rest must be batched the same way for the result to be byte-identical to one clean run.
                self.batching = recorded
        if not self.partial.exists():
            self.partial.mkdir(parents=True)
            ident = {**self._ident(self.key, self.n, self.chunk_size), "batching": self.batching}
            atomic_write_bytes(ident_file, json.dumps(ident).encode())

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
        return _npy_shape(self._chunk(i)) is not None and _npy_shape(self._chunk(i).with_suffix(".idx.npy")) is not None

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
        atomic_write_bytes(self._chunk(i).with_suffix(".json"), json.dumps(record).encode())
        _atomic_save_npy(self._chunk(i).with_suffix(".idx.npy"), np.asarray(rows, dtype=np.int64))
        _atomic_save_npy(self._chunk(i), np.ascontiguousarray(feats, dtype=FEATURE_DTYPE))

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

    def finalize(self, labels: np.ndarray, meta: dict[str, Any]) -> Path:
        """Assemble layer files in original order, write labels and meta.json last, and move into place."""
        missing = self.missing_chunks()
        if missing:
            raise RuntimeError(f"cannot finalise {self.final_dir}: chunks {missing[:5]} missing")
        first = np.load(self._chunk(0), mmap_mode="r")
        num_states, _, hidden = first.shape
        for layer in range(num_states):
            out_path = self.partial / layer_file(layer)
            out = np.lib.format.open_memmap(out_path, mode="w+", dtype=FEATURE_DTYPE, shape=(self.n, hidden))
            for i in range(self.num_chunks):
                rows = np.load(self._chunk(i).with_suffix(".idx.npy"))
                out[rows] = np.load(self._chunk(i), mmap_mode="r")[layer]
            out.flush()
            del out
        _atomic_save_npy(self.partial / "labels.npy", np.asarray(labels, dtype=np.int64))
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
