"""Texts and labels for one dataset split: the built-in datasets, local files, or hub datasets.

``load_split`` is the only way any stage reads texts. Labels map to contiguous ints in a stable order
(numeric when every label is a number, else alphabetical) computed over all splits of the full dataset,
so train and test agree and ``--limit`` never changes the mapping. Files are streamed (``text_readers``), and
labels take one spelling each and are checked across splits (``labels``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.errors import UserError
from benchmark.core.labels import SplitLabels, check_label_sets, label_order
from benchmark.core.registry import Registry
from benchmark.core.text_readers import Row, check_columns, read_rows, row_unit, to_row

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
COMPRESSED = (".gz", ".bz2", ".xz", ".zip", ".zst")
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


def _keep_splits(files: dict[str, list[Path]], split: str, where: str) -> dict[str, Path]:
    """The requested and known splits among ``files`` (split name -> candidate files), one file each."""
    out = {}
    for name, paths in files.items():
        if name not in KNOWN_SPLITS and name != split:
            continue
        if len(paths) > 1:
            raise UserError(f"{where}: split '{name}' has several files ({', '.join(p.name for p in paths)}); keep one")
        out[name] = _readable(paths[0])
    return out


def _readable(path: Path) -> Path:
    """``path`` when it is a file (or a link to one); a folder, a broken link or a device is refused by name."""
    if path.is_file():
        return path
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path} is a broken symbolic link (to {path.readlink()}): point it at the file or remove it")
    what = "a folder" if path.is_dir() else "not a regular file"
    raise UserError(f"{path} is {what}, not a split file: replace it with the file or move it out of the way")


def _compressed(folder: Path) -> str:
    """A hint naming compressed split files in ``folder`` (they are not read), or ''."""
    packed = [
        p.name for p in sorted(folder.iterdir()) if p.suffix in COMPRESSED and Path(p.stem).suffix in FILE_SUFFIXES
    ]
    return f"; {', '.join(packed)} are compressed: decompress them first" if packed else ""


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
    """Map split name -> local file for a registry name, folder, file, or ``{split}`` file pattern.

    Raises:
        _HubFallback: ``dataset`` is a hub id, or a built-in dataset with a hub id whose local folder is absent.
    """
    if dataset in DATASETS:
        return _folder_files(_builtin_folder(dataset, data_dir), split)
    if "{split}" in dataset:
        return _pattern_files(dataset, split)
    return _path_files(dataset, split)


def _builtin_folder(dataset: str, data_dir: str | Path) -> Path:
    """The local folder of built-in ``dataset`` under ``data_dir``; absent, the hub (if it has an id) or an error."""
    spec = DATASETS.get(dataset)
    folder = Path(data_dir) / spec.folder
    if not folder.is_dir():
        if spec.hf_id:
            raise _HubFallback(folder)
        raise UserError(
            f"dataset '{dataset}': folder {folder} not found; set paths.data_dir or LAYERFUSE_DATA_DIR to the "
            f"folder holding {dataset}/"
        )
    return folder


def _pattern_files(dataset: str, split: str) -> dict[str, Path]:
    """The files a ``{split}`` pattern (``data/mr_{split}.csv``) matches, by the text standing for ``{split}``."""
    pattern = Path(dataset)
    rx = re.compile(re.escape(pattern.name).replace(re.escape("{split}"), "(?P<split>.+)") + "$")
    found: dict[str, list[Path]] = {}
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


def _path_files(dataset: str, split: str) -> dict[str, Path]:
    """One split file (it is the train split) or a folder of split files; a hub-shaped name that is neither: the hub."""
    path = Path(dataset)
    if path.is_symlink() and not path.exists():
        _readable(path)
    if path.is_file():
        if path.suffix not in FILE_SUFFIXES:
            packed = "; decompress it first" if path.suffix in COMPRESSED else ""
            raise UserError(f"dataset file {path} must end in one of {', '.join(FILE_SUFFIXES)}{packed}")
        return {"train": path}
    if not path.is_dir():
        if dataset.count("/") == 1 and not dataset.startswith((".", "/")):
            raise _HubFallback()  # looks like a hub id
        check_dataset_name(dataset)
    return _folder_files(path, split)


def _folder_files(folder: Path, split: str) -> dict[str, Path]:
    """The split files (``<split><suffix>``) in ``folder``."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix in FILE_SUFFIXES:
            found.setdefault(p.stem, []).append(p)
    files = _keep_splits(found, split, str(folder))
    if not files:
        raise UserError(
            f"dataset folder {folder} holds no split files: expected <split>{'|'.join(FILE_SUFFIXES)} with split "
            f"one of {', '.join(KNOWN_SPLITS)} (e.g. train.csv, test.csv){_compressed(folder)}"
        )
    return files


@dataclass(frozen=True)
class _Source:
    """One split's rows: a file read once more for each pass, or a hub split already in memory."""

    name: str  # the file, or the hub dataset and split
    unit: str  # what ``Row.place`` counts: "line" or "row"
    rows: Callable[[], Generator[Row, None, None]]


def _file_source(path: Path, text_col: str, label_col: str, encoding: str) -> _Source:
    return _Source(str(path), row_unit(path, encoding), lambda: read_rows(path, text_col, label_col, encoding))


def _hub_rows(ds: object, text_col: str, label_col: str, where: str) -> tuple[list[Row] | None, list[str] | None]:
    """A hub split's rows and its class names when the label column is a ClassLabel (then labels are the names).

    Rows are None when labels are withheld (ClassLabel -1, as in GLUE test splits).
    """
    feat = ds.features.get(label_col)  # type: ignore[attr-defined]
    values = ds[label_col]  # type: ignore[index]
    texts = ds[text_col]  # type: ignore[index]
    names = list(feat.names) if getattr(feat, "names", None) else None
    pairs = enumerate(zip(texts, values, strict=True), 1)
    if names is None:
        return [to_row(where, n, t, v, text_col, label_col) for n, (t, v) in pairs], None
    if any(i is None or i < 0 for i in values):
        return None, names
    # the names are the dataset's own classes: kept as spelled (to_row only checks the text)
    return [Row(n, to_row(where, n, t, names[i], text_col, label_col).text, names[i]) for n, (t, i) in pairs], names


def _load_hub(
    dataset: str, split: str, hf_config: str | None, text_col: str, label_col: str, local: Path | None
) -> tuple[dict[str, _Source], list[str] | None]:
    """Every split of a hub dataset (a built-in one under our split and column names) as rows."""
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
    out: dict[str, _Source] = {}
    names = None
    for ours, theirs in pairs:
        if theirs not in dsd:
            continue
        where = f"hub dataset {hub_id} split '{theirs}'"
        ds = dsd[theirs]
        check_columns(where, list(ds.column_names), text_col, label_col)
        rows, names = _hub_rows(ds, text_col, label_col, f"{where} row")
        if rows is None:
            if ours == split:
                raise UserError(f"{where} has no labels; choose a labelled split with --split")
            continue
        out[ours] = _Source(where, "row", lambda rows=rows: (r for r in rows))  # type: ignore[misc]
    if split not in out:
        raise UserError(f"hub dataset '{hub_id}' has no split '{split}' (has: {', '.join(out)})")
    return out, names


_WARNED: set[tuple[str, int]] = set()  # (source, count) already warned about: load_split runs once per stage


def _warn_once(source: _Source, count: int, message: str, *args: object) -> None:
    if (source.name, count) not in _WARNED:
        _WARNED.add((source.name, count))
        log.warning(message, source.name, *args)


def _warn_texts(source: _Source, rows: list[Row], text_col: str) -> None:
    """Warn about kept empty texts (where they are) and about a text column that holds only numbers."""
    empty = [r.place for r in rows if not r.text]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        unit = f"{source.unit}s" if len(empty) > 1 else source.unit
        _warn_once(
            source,
            len(empty),
            "%s: %d empty or whitespace-only text(s) kept (%s %s); they are embedded as empty input",
            len(empty),
            unit,
            shown,
        )
    texts = [r.text for r in rows if r.text]
    if texts and all(_is_number(t) for t in texts):
        _warn_once(
            source,
            -len(texts),
            "%s: every text in column '%s' is a number (e.g. %r): is data.text_column the text column?",
            text_col,
            texts[0],
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _subset(n: int, limit: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(LIMIT_SEED).choice(n, size=limit, replace=False))


def _scan(source: _Source, keep_rows: bool) -> tuple[SplitLabels, list[Row]]:
    """One pass over ``source``: its labels and, when ``keep_rows``, its rows."""
    labels, rows = SplitLabels(source.name, source.unit), []
    for row in source.rows():
        labels.add(row.label, row.place)
        if keep_rows:
            rows.append(row)
    return labels, rows


def _pick(source: _Source, keep: np.ndarray) -> list[Row]:
    """The rows at the sorted indices ``keep``, in one more pass that holds only them (``--limit`` bounds memory)."""
    out: list[Row] = []
    wanted = iter(keep.tolist())
    want = next(wanted, None)
    with closing(source.rows()) as rows:
        for i, row in enumerate(rows):
            if want is None:
                break
            if i == want:
                out.append(row)
                want = next(wanted, None)
    return out


def _sources(
    dataset: str, split: str, data_dir: str | Path, text_col: str, label_col: str, hf_config: str | None, encoding: str
) -> tuple[dict[str, _Source], list[str] | None, str, bool]:
    """Every split to read (split -> source), the hub's class names if any, the requested split's source, hub or not."""
    try:
        files = _split_files(dataset, split, data_dir)
    except _HubFallback as hub:
        sources, names = _load_hub(dataset, split, hf_config, text_col, label_col, hub.local)
        spec = DATASETS.get(dataset) if dataset in DATASETS else None
        return sources, names, (spec.hf_id if spec and spec.hf_id else dataset), True
    if split not in files:
        raise UserError(
            f"dataset '{dataset}' has no split '{split}' (found: {', '.join(sorted(files))}); use --split "
            f"{','.join(sorted(files))}"
        )
    sources = {s: _file_source(p, text_col, label_col, encoding) for s, p in files.items()}
    return sources, None, str(files[split].resolve()), False


def _read(
    dataset: str, split: str, sources: dict[str, _Source], names: list[str] | None, limit: int | None
) -> tuple[list[Row], list[str]]:
    """The requested split's rows (its ``--limit`` subset) and the class names over every split, checked."""
    scans: dict[str, SplitLabels] = {}
    rows: list[Row] = []
    for name, src in sources.items():
        scans[name], got = _scan(src, keep_rows=name == split and limit is None)
        rows = got if name == split else rows
    n = sum(scans[split].counts.values())
    if not n:
        raise UserError(
            f"dataset '{dataset}' split '{split}' is empty: check the file has rows under a text,label header"
        )
    if names is None:  # a ClassLabel's names are the dataset's own classes
        check_label_sets(scans)
        names = label_order({lab for scan in scans.values() for lab in scan.counts})
    if limit is not None:
        rows = _pick(sources[split], _subset(n, limit))
    return rows, names


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
        limit: Keep a fixed seeded random subset of this many rows, in original order (files are streamed: only
            those rows are held).
        text_column: Text column of local files and hub datasets.
        label_column: Label column of local files and hub datasets.
        hf_config: Hub dataset configuration name.
        encoding: Encoding of CSV and JSON files (UTF-8 may start with a byte-order mark).

    Every split read shapes the label mapping, in ``benchmark.core.labels``' spelling (one class per number value,
    per true/false, per NFC text without invisible characters). Empty or whitespace-only texts are kept (they are
    rows of the split) with one warning naming how many and where.

    Raises:
        UserError: missing folder/file/column/split, an empty split, a file not in ``encoding`` or of another
            format, a CSV row with more or fewer fields than its header, a text that is not a text, an empty label,
            labels differing only by case, or validation/test labels that train does not have.
    """
    try:
        sources, names, source, from_hub = _sources(
            dataset, split, data_dir, text_column, label_column, hf_config, encoding
        )
        rows, names = _read(dataset, split, sources, names, limit)
    except OSError as err:  # a file removed, unreadable or a device: named, not a traceback
        raise UserError(f"cannot read {err.filename or dataset}: {err.strerror or err}; check the file") from None
    index = {name: i for i, name in enumerate(names)}
    texts = [r.text for r in rows]
    labels = np.array([index[r.label] for r in rows], dtype=np.int64)
    _warn_texts(sources[split], rows, text_column)
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
