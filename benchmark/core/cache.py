"""The per-layer feature cache: key, directory layout, atomic file writes, validated reader.

Layout of one complete key directory (STYLE G8)::

    <cache_dir>/<org>__<model>/<revision>/<dataset>-<data12>/<split>/<pooling>-L<max_length>-<dtype>/
        layer_00.npy ... layer_LL.npy   (N, H) float16, layer 00 = embeddings; opened with mmap
        labels.npy                      (N,) int64
        meta.json                       written last; its presence with "complete": true means done

The resumable writer that produces it is ``benchmark.core.cache_writer``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmark.core.errors import UserError

FORMAT_VERSION = 1
FEATURE_DTYPE = np.float16


class CacheError(UserError):
    """A cache directory that is missing, partial or corrupt.

    Args:
        message: The full one-line message.
        reason: What is wrong, in a few words (e.g. ``labels.npy is missing``), for callers that phrase their own.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


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
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (full disk, interrupt) leaves no torn file behind


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` to ``path`` through a synced temporary file, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (full disk, interrupt) leaves no torn file behind


def npy_shape(path: Path) -> tuple[int, ...] | None:
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
        CacheError: naming the directory and what is wrong (also in its ``reason``).
    """
    path = Path(path)
    try:
        meta = _read_meta(path)
        _check_files(path, meta)
    except _Broken as err:
        raise CacheError(
            f"cache {path}: {err}; re-extract it (layerfuse extract ... with the same settings)", str(err)
        ) from None
    return dict(meta)


class _Broken(Exception):
    """What is wrong with a cache directory, in a few words."""


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise _Broken("meta.json is missing" if path.is_dir() else "it does not exist")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        at = err.pos if isinstance(err, json.JSONDecodeError) else err.start
        raise _Broken(f"meta.json is corrupt ({type(err).__name__} at byte {at:,})") from None
    if not isinstance(meta, dict):
        raise _Broken(f"meta.json holds a {type(meta).__name__}, not an object")
    if not meta.get("complete") or meta.get("format_version") != FORMAT_VERSION:
        raise _Broken(
            f"meta.json is incomplete or of another format version ({meta.get('format_version')!r}, "
            f"this version reads {FORMAT_VERSION})"
        )
    # A meta.json that parses can still lack fields or hold the wrong types (hand edits, other tools).
    for name, kind in (("n", int), ("hidden_size", int), ("num_layers", int), ("files", dict)):
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            raise _Broken(
                f"meta.json field '{name}' is {meta.get(name)!r}, not {'an int' if kind is int else 'an object'}"
            )
    labels = meta.get("label_names")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise _Broken(f"meta.json field 'label_names' is {labels!r}, not a list of label names")
    if not isinstance(meta.get("texts_sha256"), str):
        raise _Broken(f"meta.json field 'texts_sha256' is {meta.get('texts_sha256')!r}, not a hash")
    return meta


def _check_files(path: Path, meta: dict[str, Any]) -> None:
    n, h, num_layers = meta["n"], meta["hidden_size"], meta["num_layers"]
    for name, size in meta["files"].items():
        f = path / str(name)
        if not f.is_file():
            raise _Broken(f"{name} is missing")
        actual = f.stat().st_size
        if not isinstance(size, int) or actual != size:
            state = "truncated" if isinstance(size, int) and actual < size else "of the wrong size"
            raise _Broken(
                f"{name} is {state}: {actual:,} of {size:,} bytes"
                if isinstance(size, int)
                else f"{name}: size {size!r} in meta.json"
            )
    for layer in range(num_layers + 1):
        shape = npy_shape(path / layer_file(layer))
        if shape != (n, h):
            raise _Broken(f"{layer_file(layer)} {_shape_text(shape)}, expected ({n}, {h})")
    shape = npy_shape(path / "labels.npy")
    if shape != (n,):
        raise _Broken(f"labels.npy {_shape_text(shape)}, expected ({n},)")


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "is missing or unreadable" if shape is None else f"has shape {shape}"


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
