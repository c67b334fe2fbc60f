"""Texts and labels for one dataset split: the built-in datasets, local files, or hub datasets.

``load_split`` is the only way any stage reads texts. Labels map to contiguous ints in a stable order
(numeric when every label is a number, else alphabetical) computed over all splits of the full dataset,
so train and test agree and ``--limit`` never changes the mapping.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
# Split names read from a folder or pattern besides the requested one: every split shapes the label mapping, and
# other files there (dataset_info.json, notes) are not splits.
KNOWN_SPLITS = ("train", "test", "validation", "valid", "val", "dev")
LIMIT_SEED = 0  # the --limit subset is fixed so every model extracts the same rows


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A built-in dataset: CSV files ``<data_dir>/<folder>/{split}.csv``, with a hub fallback for users online.

    Attributes:
        name: Registry name.
        folder: Folder under ``paths.data_dir``.
        hf_id: Hub dataset id used when the local folder is absent (None: local only).
        hf_splits: Our split name -> hub split name (e.g. SST-2's labelled test is the hub's validation split;
            its hub test split has no labels).
        hf_text_column: Text column on the hub.
        hf_label_column: Label column on the hub.
        class_names: Label as written -> class name, where the source documents it (MR, SST-2: 0 negative,
            1 positive); an exported model's predictions use them (``class_names``).
    """

    name: str
    folder: str
    hf_id: str | None = None
    hf_splits: tuple[tuple[str, str], ...] = (("train", "train"), ("test", "test"))
    hf_text_column: str = "text"
    hf_label_column: str = "label"
    class_names: tuple[tuple[str, str], ...] = ()


POLARITY = (("0", "negative"), ("1", "positive"))  # both sources' documented coding (data/SOURCES.md)
DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.add(
    "sst2",
    DatasetSpec(
        "sst2",
        "sst2",
        "stanfordnlp/sst2",
        (("train", "train"), ("test", "validation")),
        "sentence",
        class_names=POLARITY,
    ),
)
DATASETS.add("mr", DatasetSpec("mr", "mr", "cornell-movie-review-data/rotten_tomatoes", class_names=POLARITY))
DATASETS.add("r8", DatasetSpec("r8", "r8"))
DATASETS.add("r52", DatasetSpec("r52", "r52"))


def class_names(dataset: str, label_names: list[str]) -> list[str]:
    """``label_names`` (labels as written) with a registered dataset's known class names in their place.

    The features keep the labels as written, which their cache keys hash; the names are applied where a user reads
    predictions (an exported model), so no cache is invalidated. Labels the table does not name stay as they are.
    """
    known = dict(DATASETS.get(dataset).class_names) if dataset in DATASETS else {}
    return [known.get(name, name) for name in label_names]


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
    source: str = ""  # the file read, or the hub dataset id when ``from_hub``
    from_hub: bool = False

    @property
    def data_sha256(self) -> str:
        """Hash of texts, labels and label names: changes whenever any of them does."""
        blob = json.dumps([self.texts_sha256, self.labels_sha256, self.label_names])
        return hashlib.sha256(blob.encode()).hexdigest()


def check_classes(split: TextSplit, dataset: str) -> None:
    """Refuse training data with fewer than two classes (the head and its metrics need two).

    Raises:
        UserError: naming the dataset, split and the one class found.
    """
    counts = np.bincount(split.labels, minlength=len(split.label_names))
    present = [split.label_names[i] for i in np.flatnonzero(counts)]
    if len(present) < 2:
        raise UserError(
            f"dataset '{dataset}' split '{split.split}' has a single class ({', '.join(map(repr, present))} in all "
            f"{len(split.labels)} rows): a classifier needs at least 2; check the label column (data.label_column) "
            "and --limit"
        )


def dataset_slug(name: str) -> str:
    """A filesystem-safe name for a dataset reference (registry name, path or hub id)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def dataset_label(name: str) -> str:
    """A short readable name for study and experiment names.

    A local folder or file is named by its own name (no suffix, no ``{split}``), anything else (registry name,
    hub id) by its slug.
    """
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


def canonical_label(value: object) -> str:
    """One spelling per label: numbers by value (``1``, ``1.0`` and ``01`` are the class ``1``), text as written."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(frozen=True)
class _Table:
    """Raw rows of one split: texts, label strings, and where each row is in its source (``unit`` N)."""

    texts: list[str]
    labels: list[str]
    places: list[int]
    unit: str  # "line" (CSV, JSON lines) or "row" (JSON arrays, Parquet, hub datasets)
    source: str


def _check_columns(where: str, columns: list[str], text_col: str, label_col: str) -> None:
    for col, key in ((text_col, "data.text_column"), (label_col, "data.label_column")):
        if col not in columns:
            raise UserError(f"{where} has no column '{col}' (columns: {', '.join(columns)}); set --set {key}=<name>")


def _decode(path: Path, encoding: str) -> str:
    """The file's text in ``encoding``; UTF-8 files may start with a byte-order mark (spreadsheets write one)."""
    raw = path.read_bytes()
    utf8 = codecs.lookup(encoding).name == "utf-8"
    skip = len(codecs.BOM_UTF8) if utf8 and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode(encoding)
    except UnicodeDecodeError as err:
        at = skip + err.start
        line = raw.count(b"\n", 0, at) + 1
        raise UserError(
            f"{path} is not {encoding}: byte 0x{raw[at]:02x} at offset {at:,} (line {line}) "
            "cannot be decoded; set its encoding with --set data.encoding=NAME (e.g. latin-1 or cp1252)"
        ) from None


def _read_csv(path: Path, text_col: str, label_col: str, encoding: str) -> _Table:
    """CSV through ``csv`` so texts like 'NA' stay text; a row with more or fewer fields than the header is refused."""
    reader = csv.reader(io.StringIO(_decode(path, encoding), newline=""))
    columns = next(reader, [])
    _check_columns(str(path), columns, text_col, label_col)
    ti, li = columns.index(text_col), columns.index(label_col)
    texts, labels, places = [], [], []
    line = reader.line_num + 1
    for row in reader:
        if row and len(row) != len(columns):
            raise UserError(
                f"{path} line {line}: {len(row)} fields where the header has {len(columns)} ({', '.join(columns)}); "
                'quote texts that hold commas ("a, b") or fix the row'
            )
        if row:  # csv yields [] for a blank line
            texts.append(row[ti].strip())
            labels.append(row[li])
            places.append(line)
        line = reader.line_num + 1
    return _Table(texts, labels, places, "line", str(path))


def _read_json(path: Path, text_col: str, label_col: str, encoding: str) -> _Table:
    """A JSON array of objects, or JSON lines (one object per line)."""
    text = _decode(path, encoding)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
        items, unit = list(enumerate(records, 1)), "row"
    else:
        items, unit = [], "line"
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((n, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise UserError(f"{path} line {n}: not valid JSON ({err.msg})") from None
    texts, labels, places = [], [], []
    for n, record in items:
        if not isinstance(record, dict):
            raise UserError(f"{path} {unit} {n}: expected an object with '{text_col}' and '{label_col}'")
        _check_columns(f"{path} {unit} {n}", list(record), text_col, label_col)
        texts.append(str(record[text_col] or "").strip())
        labels.append("" if record[label_col] is None else str(record[label_col]))
        places.append(n)
    return _Table(texts, labels, places, unit, str(path))


def _read_file(path: Path, text_col: str, label_col: str, encoding: str) -> _Table:
    """Read one local file (CSV, JSON or JSON lines, Parquet)."""
    if path.suffix == ".csv":
        return _read_csv(path, text_col, label_col, encoding)
    if path.suffix in (".json", ".jsonl"):
        return _read_json(path, text_col, label_col, encoding)
    import datasets

    ds = datasets.Dataset.from_parquet(str(path))
    _check_columns(str(path), list(ds.column_names), text_col, label_col)
    texts = [str(t or "").strip() for t in ds[text_col]]
    labels = ["" if v is None else str(v) for v in ds[label_col]]
    return _Table(texts, labels, list(range(1, len(texts) + 1)), "row", str(path))


def _keep_splits(files: dict[str, list[Path]], split: str, where: str) -> dict[str, Path]:
    """The requested and known splits among ``files`` (split name -> candidate files), one file each."""
    out = {}
    for name, paths in files.items():
        if name not in KNOWN_SPLITS and name != split:
            continue
        if len(paths) > 1:
            raise UserError(f"{where}: split '{name}' has several files ({', '.join(p.name for p in paths)}); keep one")
        out[name] = paths[0]
    return out


def check_dataset_name(dataset: str) -> None:
    """Refuse (``UserError``, with suggestions) a name that is no dataset, file, folder, ``{split}`` pattern or hub id.

    Reads only the registry and the file system, so the command line refuses a misspelt dataset before it imports
    torch; ``load_split`` refuses the same names.
    """
    hub_shaped = dataset.count("/") == 1 and not dataset.startswith((".", "/"))
    if dataset in DATASETS or "{split}" in dataset or Path(dataset).exists() or hub_shaped:
        return
    try:
        DATASETS.get(dataset)
    except UserError as err:
        raise UserError(f"{err}; or give a folder of split files, a file, or a hub id (org/name)") from None


class _HubFallback(Exception):
    """Not a local dataset: try the hub (``local`` is the folder a built-in dataset was expected in)."""

    def __init__(self, local: Path | None = None) -> None:
        super().__init__(str(local))
        self.local = local


def _split_files(dataset: str, split: str, data_dir: str | Path) -> dict[str, Path]:
    """Map split name -> local file for a registry name, folder, or ``{split}`` file pattern.

    Raises:
        _HubFallback: ``dataset`` is a hub id, or a built-in dataset with a hub id whose local folder is absent.
    """
    found: dict[str, list[Path]] = {}
    if dataset in DATASETS:
        spec = DATASETS.get(dataset)
        folder = Path(data_dir) / spec.folder
        if not folder.is_dir():
            if spec.hf_id:
                raise _HubFallback(folder)
            raise UserError(
                f"dataset '{dataset}': folder {folder} not found; set paths.data_dir or LAYERFUSE_DATA_DIR to the "
                f"folder holding {dataset}/"
            )
    elif "{split}" in dataset:
        pattern = Path(dataset)
        rx = re.compile(re.escape(pattern.name).replace(re.escape("{split}"), "(?P<split>.+)") + "$")
        if pattern.parent.is_dir():
            for p in sorted(pattern.parent.glob(pattern.name.replace("{split}", "*"))):
                if m := rx.match(p.name):
                    found.setdefault(m["split"], []).append(p)
        files = _keep_splits(found, split, dataset)
        if not files:
            raise UserError(
                f"dataset pattern {dataset} matches no split file; expected e.g. {dataset.replace('{split}', 'train')}"
            )
        return files
    else:
        folder = Path(dataset)
        if folder.is_file():
            if folder.suffix not in FILE_SUFFIXES:
                raise UserError(f"dataset file {folder} must end in one of {', '.join(FILE_SUFFIXES)}")
            return {"train": folder}
        if not folder.is_dir():
            if dataset.count("/") == 1 and not dataset.startswith((".", "/")):
                raise _HubFallback()  # looks like a hub id
            check_dataset_name(dataset)
    for p in sorted(folder.iterdir()):
        if p.suffix in FILE_SUFFIXES:
            found.setdefault(p.stem, []).append(p)
    files = _keep_splits(found, split, str(folder))
    if not files:
        raise UserError(
            f"dataset folder {folder} holds no split files: expected <split>{'|'.join(FILE_SUFFIXES)} with split "
            f"one of {', '.join(KNOWN_SPLITS)} (e.g. train.csv, test.csv)"
        )
    return files


def _hub_labels(ds: object, label_col: str) -> tuple[list[str] | None, list[str] | None]:
    """Label strings of a hub split and the class names when the column is a ClassLabel.

    Labels are None when withheld (ClassLabel -1, as in GLUE test splits).
    """
    feat = ds.features.get(label_col)  # type: ignore[attr-defined]
    values = ds[label_col]  # type: ignore[index]
    names = list(feat.names) if getattr(feat, "names", None) else None
    if names is None:
        return [str(v) for v in values], None
    if any(i is None or i < 0 for i in values):
        return None, names
    return [names[i] for i in values], names


def _load_hub(
    dataset: str, split: str, hf_config: str | None, text_col: str, label_col: str, local: Path | None
) -> tuple[dict[str, _Table], list[str] | None]:
    """Every split of a hub dataset (a built-in one under our split and column names) as texts and label strings."""
    import datasets

    spec = DATASETS.get(dataset) if dataset in DATASETS else None
    hub_id = spec.hf_id if spec and spec.hf_id else dataset
    if spec:
        text_col, label_col = spec.hf_text_column, spec.hf_label_column
        log.info("dataset '%s': no local folder %s; loading %s from the Hugging Face hub", dataset, local, hub_id)
    try:
        dsd = datasets.load_dataset(hub_id, hf_config)
    except Exception as err:  # noqa: BLE001 - the hub raises many types; all mean "cannot load this id"
        offline = bool(datasets.config.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE)
        why = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and it is not in the local hub cache"
            if offline
            else f"the hub was unreachable or has no such dataset ({type(err).__name__})"
        )
        if spec:
            raise UserError(
                f"dataset '{dataset}': no local folder {local} and its hub copy {hub_id} could not be loaded: {why}; "
                f"put {spec.folder}/train.csv and test.csv under paths.data_dir (LAYERFUSE_DATA_DIR)"
            ) from None
        raise UserError(
            f"dataset '{dataset}' is not a registered name, local file or folder, and the hub could not load it: "
            f"{why}. Registered: {', '.join(DATASETS.names())}"
        ) from None
    pairs = list(spec.hf_splits) if spec else [(s, s) for s in dsd]
    out: dict[str, _Table] = {}
    names = None
    for ours, theirs in pairs:
        if theirs not in dsd:
            continue
        ds = dsd[theirs]
        _check_columns(f"hub dataset {hub_id} split '{theirs}'", list(ds.column_names), text_col, label_col)
        labels, names = _hub_labels(ds, label_col)
        if labels is None:
            if ours == split:
                raise UserError(
                    f"hub dataset {hub_id} split '{theirs}' has no labels; choose a labelled split with --split"
                )
            continue
        texts = [str(t or "").strip() for t in ds[text_col]]
        out[ours] = _Table(
            texts, labels, list(range(1, len(texts) + 1)), "row", f"hub dataset {hub_id} split '{theirs}'"
        )
    if split not in out:
        raise UserError(f"hub dataset '{hub_id}' has no split '{split}' (has: {', '.join(out)})")
    return out, names


_WARNED: set[tuple[str, int]] = set()  # (source, count) already warned about: load_split runs once per stage


def _warn_empty_texts(table: _Table, keep: np.ndarray) -> None:
    empty = [table.places[i] for i in keep if not table.texts[i]]
    if empty and (table.source, len(empty)) not in _WARNED:
        _WARNED.add((table.source, len(empty)))
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        log.warning(
            "%s: %d empty or whitespace-only text(s) kept (%s %s); they are embedded as empty input",
            table.source,
            len(empty),
            f"{table.unit}s" if len(empty) > 1 else table.unit,
            shown,
        )


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
    encoding: str = "utf-8",
) -> TextSplit:
    """Load one split of a dataset.

    Args:
        dataset: Registry name (its hub copy when the local folder is absent), a folder of
            ``<split>.{csv,jsonl,json,parquet}`` files, a file pattern with ``{split}`` (only the requested split and
            ``KNOWN_SPLITS`` are read), a single file (its only split is ``train``), or a hub dataset id.
        split: Split name (``train``/``test``/...).
        data_dir: Folder holding the built-in datasets.
        limit: Keep a fixed seeded random subset of this many rows, in original order.
        text_column: Text column of local files and hub datasets.
        label_column: Label column of local files and hub datasets.
        hf_config: Hub dataset configuration name.
        encoding: Encoding of CSV and JSON files (UTF-8 may start with a byte-order mark).

    Empty or whitespace-only texts are kept (they are rows of the split) with one warning naming how many and
    where; numeric labels are one class per value (``1`` and ``1.0`` alike).

    Raises:
        UserError: missing folder/file/column/split, an empty split, a file not in ``encoding``, a CSV row with
            more or fewer fields than its header, or an empty label.
    """
    names: list[str] | None = None
    try:
        files = _split_files(dataset, split, data_dir)
    except _HubFallback as hub:
        all_splits, names = _load_hub(dataset, split, hf_config, text_column, label_column, hub.local)
        spec = DATASETS.get(dataset) if dataset in DATASETS else None
        source, from_hub = (spec.hf_id if spec and spec.hf_id else dataset), True
    else:
        if split not in files:
            raise UserError(
                f"dataset '{dataset}' has no split '{split}' (found: {', '.join(sorted(files))}); use --split "
                f"{','.join(sorted(files))}"
            )
        all_splits = {s: _read_file(p, text_column, label_column, encoding) for s, p in files.items()}
        source, from_hub = str(files[split].resolve()), False
    table = all_splits[split]
    if not table.texts:
        raise UserError(
            f"dataset '{dataset}' split '{split}' is empty: check the file has rows under a text,label header"
        )
    for t in all_splits.values():  # every split read shapes the label mapping
        if "" in t.labels:
            i = t.labels.index("")
            raise UserError(f"{t.source} {t.unit} {t.places[i]} has an empty label ({label_column}): fill or drop it")
    if names is None:  # labels as written: one spelling per class, over every split
        spelled = {s: [canonical_label(lab) for lab in t.labels] for s, t in all_splits.items()}
        names = _sort_labels({lab for labs in spelled.values() for lab in labs})
        raw_labels = spelled[split]
    else:
        raw_labels = table.labels
    index = {name: i for i, name in enumerate(names)}
    keep = _subset(len(table.texts), limit)
    texts = [table.texts[i] for i in keep]
    labels = np.array([index[raw_labels[i]] for i in keep], dtype=np.int64)
    _warn_empty_texts(table, keep)
    return TextSplit(
        dataset=dataset_slug(dataset),
        split=split,
        texts=texts,
        labels=labels,
        label_names=names,
        texts_sha256=hashlib.sha256("\x1e".join(texts).encode()).hexdigest(),
        labels_sha256=hashlib.sha256(labels.tobytes()).hexdigest(),
        source=source,
        from_hub=from_hub,
    )
