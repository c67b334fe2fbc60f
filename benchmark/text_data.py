"""Texts and labels for one dataset split: the built-in datasets, local files, or hub datasets.

``load_split`` is the only way any stage reads texts. Labels map to contiguous ints in a stable order
(numeric when every label is a number, else alphabetical) computed over all splits of the full dataset,
so train and test agree and ``--limit`` never changes the mapping.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.registry import Registry

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
LIMIT_SEED = 0  # the --limit subset is fixed so every model extracts the same rows


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A built-in dataset: CSV files ``<data_dir>/<folder>/{split}.csv``, with a hub fallback for users online.

    Attributes:
        name: Registry name.
        folder: Folder under ``paths.data_dir``.
        hf_id: Hub dataset id used when the local folder is absent (None: local only).
        hf_splits: Our split name -> hub split name (e.g. SST-2's test is GLUE's validation).
        hf_text_column: Text column on the hub.
    """

    name: str
    folder: str
    hf_id: str | None = None
    hf_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("test", "test"))
    hf_text_column: str = "text"


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.add("sst2", DatasetSpec("sst2", "sst2", "stanfordnlp/sst2", (("train", "train"), ("test", "validation")), "sentence"))
DATASETS.add("mr", DatasetSpec("mr", "mr", "cornell-movie-review-data/rotten_tomatoes"))
DATASETS.add("r8", DatasetSpec("r8", "r8"))
DATASETS.add("r52", DatasetSpec("r52", "r52"))


@dataclass(frozen=True)
class TextSplit:
    """One split's texts and integer labels, with the identity hashes used by the cache."""

    dataset: str
    split: str
    texts: list[str]
    labels: np.ndarray  # (N,) int64
    label_names: list[str]
    texts_sha256: str
    labels_sha256: str

    @property
    def data_sha256(self) -> str:
        """Hash of texts, labels and label names: changes whenever any of them does."""
        blob = json.dumps([self.texts_sha256, self.labels_sha256, self.label_names])
        return hashlib.sha256(blob.encode()).hexdigest()


def dataset_slug(name: str) -> str:
    """A filesystem-safe name for a dataset reference (registry name, path or hub id)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def dataset_label(name: str) -> str:
    """A short readable name for study and experiment names: a local folder or file by its own name (no
    suffix, no ``{split}``), anything else (registry name, hub id) by its slug."""
    path = Path(name)
    if "{split}" in name and path.parent.is_dir():
        stem = path.name.replace("{split}", "").split(".")[0].strip("_-.")
        return dataset_slug(stem or path.parent.name)
    if path.exists():
        return dataset_slug(path.stem if path.is_file() else path.name)
    return dataset_slug(name)


def _sort_labels(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


def _read_file(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    """Read one local file; CSV through ``csv`` so texts like 'NA' stay text, others through ``datasets``."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    else:
        import datasets

        loader = datasets.Dataset.from_parquet if path.suffix == ".parquet" else datasets.Dataset.from_json
        ds = loader(str(path))
        columns = list(ds.column_names)
        rows = ds.to_list()
    for col, key in ((text_col, "data.text_column"), (label_col, "data.label_column")):
        if col not in columns:
            raise UserError(f"{path} has no column '{col}' (columns: {', '.join(columns)}); set --set {key}=<name>")
    return [str(r[text_col] or "").strip() for r in rows], [str(r[label_col]) for r in rows]


def _split_files(dataset: str, data_dir: str | Path) -> tuple[dict[str, Path], str]:
    """Map split name -> local file for a registry name, folder, or ``{split}`` file pattern."""
    if dataset in DATASETS:
        folder = Path(data_dir) / DATASETS.get(dataset).folder
        if not folder.is_dir():
            raise UserError(f"dataset '{dataset}': folder {folder} not found; set paths.data_dir or LAYERFUSE_DATA_DIR to the folder holding {dataset}/")
    elif "{split}" in dataset:
        pattern = Path(dataset)
        found = {p.name: p for p in pattern.parent.glob(pattern.name.replace("{split}", "*"))} if pattern.parent.is_dir() else {}
        rx = re.compile(re.escape(pattern.name).replace(re.escape("{split}"), "(?P<split>.+)") + "$")
        files = {m["split"]: p for name, p in found.items() if (m := rx.match(name))}
        if not files:
            raise UserError(f"dataset pattern {dataset} matches no file; expected e.g. {dataset.replace('{split}', 'train')}")
        return files, dataset
    else:
        folder = Path(dataset)
        if folder.is_file():
            if folder.suffix not in FILE_SUFFIXES:
                raise UserError(f"dataset file {folder} must end in one of {', '.join(FILE_SUFFIXES)}")
            return {"train": folder}, dataset
        if not folder.is_dir():
            if dataset.count("/") == 1 and not dataset.startswith((".", "/")):
                raise FileNotFoundError(dataset)  # looks like a hub id: the caller tries the hub
            try:
                DATASETS.get(dataset)
            except UserError as err:
                raise UserError(f"{err}; or give a folder of split files, a file, or a hub id (org/name)") from None
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in FILE_SUFFIXES}
    if not files:
        raise UserError(f"dataset folder {folder} holds no {'/'.join(FILE_SUFFIXES)} split files (expected train.csv, test.csv)")
    return files, dataset


def _load_hub(dataset: str, split: str, hf_config: str | None, text_col: str, label_col: str) -> tuple[dict[str, tuple[list[str], list[str]]], list[str] | None]:
    import datasets

    spec = DATASETS.get(dataset) if dataset in DATASETS else None
    hub_id = spec.hf_id if spec else dataset
    split_map = dict(spec.hf_splits) if spec else {}
    text_col = spec.hf_text_column if spec else text_col
    try:
        dsd = datasets.load_dataset(hub_id, hf_config)
    except Exception as err:  # noqa: BLE001 - the hub raises many types; all mean "cannot load this id"
        raise UserError(f"dataset '{dataset}' is not a registered name, local file or folder, and the hub could not load it ({type(err).__name__}). Registered: {', '.join(DATASETS.names())}") from None
    out = {}
    names = None
    for ours, theirs in (split_map.items() or [(s, s) for s in dsd]):
        if theirs not in dsd:
            continue
        ds = dsd[theirs]
        feat = ds.features.get(label_col)
        if getattr(feat, "names", None):
            names = list(feat.names)
            labels = [names[i] for i in ds[label_col]]
        else:
            labels = [str(v) for v in ds[label_col]]
        out[ours] = ([str(t or "").strip() for t in ds[text_col]], labels)
    if split not in out:
        raise UserError(f"hub dataset '{hub_id}' has no split '{split}' (has: {', '.join(out)})")
    return out, names


def _subset(n: int, limit: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(LIMIT_SEED).choice(n, size=limit, replace=False))


def load_split(
    dataset: str,
    split: str,
    data_dir: str | Path,
    limit: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    hf_config: str | None = None,
) -> TextSplit:
    """Load one split of a dataset.

    Args:
        dataset: Registry name, a folder of ``<split>.{csv,jsonl,parquet}`` files, a file pattern with
            ``{split}``, a single file (its only split is ``train``), or a hub dataset id.
        split: Split name (``train``/``test``/...).
        data_dir: Folder holding the built-in datasets.
        limit: Keep a fixed seeded random subset of this many rows, in original order.

    Raises:
        UserError: missing folder/file/column/split, or an empty split.
    """
    names: list[str] | None = None
    try:
        files, _ = _split_files(dataset, data_dir)
        if split not in files:
            raise UserError(f"dataset '{dataset}' has no split '{split}' (found: {', '.join(sorted(files))}); use --split {','.join(sorted(files))}")
        all_splits = {s: _read_file(p, text_column, label_column) for s, p in files.items()}
    except FileNotFoundError:
        all_splits, names = _load_hub(dataset, split, hf_config, text_column, label_column)
    texts, raw_labels = all_splits[split]
    if not texts:
        raise UserError(f"dataset '{dataset}' split '{split}' is empty: check the file has rows under a text,label header")
    if names is None:
        names = _sort_labels({lab for _, labs in all_splits.values() for lab in labs})
    index = {name: i for i, name in enumerate(names)}
    keep = _subset(len(texts), limit)
    texts = [texts[i] for i in keep]
    labels = np.array([index[raw_labels[i]] for i in keep], dtype=np.int64)
    return TextSplit(
        dataset=dataset_slug(dataset),
        split=split,
        texts=texts,
        labels=labels,
        label_names=names,
        texts_sha256=hashlib.sha256("\x1e".join(texts).encode()).hexdigest(),
        labels_sha256=hashlib.sha256(labels.tobytes()).hexdigest(),
    )
