"""``predict_file``: classify the texts of a CSV/JSONL/Parquet file with an exported model, in input order.

Texts are sent to the model in length-sorted batches (little padding per forward pass), with a progress bar;
the output holds the input rows and columns plus ``label`` and one ``prob_<class>`` column per class. Empty
strings are texts like any other (the model sees only its special tokens).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.core.errors import UserError
from benchmark.core.faults import remove_stale
from benchmark.core.stores import check_folder_path
from benchmark.core.text_readers import csv_delimiter, refuse_binary, text_value

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl", ".json", ".parquet")
BATCH_TEXTS = 256  # texts per model call: a progress step; the model batches by tokens inside
# Texts go to the model as a one-column frame named ``text``: models exported with a ``list[str]`` signature read a
# frame's only string column, and those exported before it name their input column ``text``.
FRAME_COLUMN = "text"


@dataclass(frozen=True)
class PredictSummary:
    """What ``predict_file`` wrote."""

    rows: int
    out: Path
    label_counts: dict[str, int]


def _format(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"{what} {path}: unknown format {suffix or '(none)'}; use one of {', '.join(FORMATS)}")
    return suffix


def check_out(src: Path, dst: Path) -> None:
    """Refuse an output that would overwrite the input (also through a link or another spelling) or is a folder.

    Raises:
        UserError: naming both paths and the fix.
    """
    same = dst.resolve() == src.resolve()
    if not same and dst.exists() and src.exists():
        same = os.path.samefile(src, dst)  # a hard link: another name, the same file
    if same:
        raise UserError(
            f"--out {dst} is the input file {src}: writing it would overwrite the texts being classified; choose "
            f"another --out, e.g. {dst.with_name(dst.stem + '.scored' + dst.suffix)}"
        )
    if dst.is_dir():
        raise UserError(f"--out {dst} is a folder; name a file in it, e.g. {dst / ('scored' + dst.suffix)}")
    check_folder_path(dst.parent, f"--out {dst}")


def read_table(path: Path, text_column: str = "text") -> Any:
    """The rows of a CSV (every value text, empty cells as empty strings), JSON (lines or an array) or Parquet file.

    A ``.csv`` separated by tabs, semicolons or bars is read so when only that gives a header with ``text_column``.
    """
    import pandas as pd

    suffix = _format(path, "--input")
    if not path.is_file():
        raise UserError(f"--input {path} does not exist")
    try:
        if suffix == ".csv":
            sep = csv_delimiter(path, (text_column,))
            return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        refuse_binary(path, "JSON")
        with path.open(encoding="utf-8", errors="replace") as fh:
            array = fh.read(4096).lstrip("\ufeff \t\r\n").startswith("[")
        return pd.read_json(path, lines=not array, orient="records" if array else None, dtype=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"--input {path} is empty: it has no header and no rows") from None
    except ValueError as err:
        raise UserError(f"--input {path} cannot be read as {suffix[1:]}: {str(err).splitlines()[0]}") from None


def texts_of(table: Any, column: str, path: Path) -> list[str]:
    """The text column as a list of strings, normalised as training texts are (trimmed; null is empty).

    Raises:
        UserError: a missing column (listing the present ones), no rows, or a value that is not a string.
    """
    if column not in table.columns:
        raise UserError(
            f"--input {path} has no column '{column}'; its columns: {', '.join(map(str, table.columns))} "
            "(choose one with --text-column)"
        )
    if len(table) == 0:
        raise UserError(f"--input {path} has no rows")
    texts = []
    for i, value in enumerate(table[column].tolist()):
        try:
            texts.append(text_value(value))  # as training read its texts
        except ValueError as err:
            raise UserError(f"--input {path}: row {i} of column '{column}' is {err}") from None
    return texts


def load_model(uri: str) -> Any:
    """``mlflow.pyfunc.load_model(uri)``, with a one-line ``UserError`` when the URI names no model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(
            f"cannot load model {uri!r}: {reason}; use models:/NAME@ALIAS, runs:/RUN_ID/model or a model folder"
        ) from None


def _predict_in_order(model: Any, texts: list[str], show_progress: bool) -> Any:
    """The model's output for ``texts`` in input order, computed in length-sorted batches of ``BATCH_TEXTS``."""
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    parts = []
    with tqdm(total=len(texts), desc="predict", unit="text", disable=not show_progress) as bar:
        for start in range(0, len(order), BATCH_TEXTS):
            idx = order[start : start + BATCH_TEXTS]
            parts.append(model.predict(pd.DataFrame({FRAME_COLUMN: [texts[i] for i in idx]})))
            bar.update(len(idx))
    sorted_out = pd.concat(parts, ignore_index=True)
    result = pd.DataFrame(index=sorted_out.index, columns=sorted_out.columns)
    result.iloc[np.asarray(order)] = sorted_out.to_numpy()
    return result.astype(sorted_out.dtypes.to_dict())


def _write_atomically(table: Any, dst: Path, out_format: str) -> None:
    """Write ``table`` to ``dst`` through a hidden temporary file moved into place: never half a file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(dst.parent, ".*.tmp-*")  # outputs of predictions killed while writing
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        if out_format == ".csv":
            table.to_csv(tmp, index=False)
        elif out_format == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_json(tmp, orient="records", lines=True, force_ascii=False)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def predict_file(
    model_uri: str, input_path: str | Path, out_path: str | Path, text_column: str = "text", show_progress: bool = True
) -> PredictSummary:
    """Classify ``input_path``'s ``text_column`` with the model at ``model_uri`` and write ``out_path``.

    Raises:
        UserError: unknown model URI, unreadable/empty input, missing column, non-text values, bad output format.
    """
    import pandas as pd

    src, dst = Path(input_path), Path(out_path)
    out_format = _format(dst, "--out")
    check_out(src, dst)
    table = read_table(src, text_column)
    texts = texts_of(table, text_column, src)
    result = _predict_in_order(load_model(model_uri), texts, show_progress)
    clash = {c: f"{c}_input" for c in result.columns if c in table.columns}
    if clash:  # e.g. a test file's true labels: kept beside the prediction
        log.warning("input columns %s renamed to %s", list(clash), list(clash.values()))
        table = table.rename(columns=clash)
    written = pd.concat([table.reset_index(drop=True), result], axis=1)
    _write_atomically(written, dst, out_format)
    counts = {str(k): int(v) for k, v in result["label"].value_counts().items()}
    log.info("predicted %d rows into %s: %s", len(written), dst, counts)
    return PredictSummary(len(written), dst, counts)
