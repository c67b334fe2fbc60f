"""Streaming readers of local split files (CSV, JSON lines, JSON arrays, Parquet): one ``Row`` at a time.

A reader holds one row and a read buffer, never the file, so a caller that keeps a bounded subset of rows uses
bounded memory whatever the file's size. Readers never guess: a text must be a string (null is the empty text;
a JSON or Parquet number is refused), a label a scalar (see ``benchmark.core.labels``); a compressed file, an
Excel workbook or a Parquet file named ``.csv`` is refused by name; a ``.csv`` whose header holds both columns
only when split by tabs, semicolons or bars is read with that delimiter (logged), and a field may hold up to
``FIELD_LIMIT`` characters. Parquet is read with pyarrow alone, so nothing is cached outside the configured stores.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import math
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmark.core.errors import UserError
from benchmark.core.labels import LabelError, canonical_label

log = logging.getLogger(__name__)

FIELD_LIMIT = 1 << 26  # characters in one CSV field (64 Mi): far past any text, short of a runaway unclosed quote
CHUNK = 1 << 16  # characters read at a time from JSON arrays (an item may be longer: the buffer grows)
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}
_MAGIC = {  # first bytes of files that are not text, and what to do instead
    b"\x1f\x8b": "a gzip-compressed file: decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive (an Excel .xlsx workbook?): save or export it as CSV UTF-8",
    b"PAR1": "a Parquet file: name it .parquet",
    b"\xd0\xcf\x11\xe0": "an old Excel .xls workbook: save or export it as CSV UTF-8",
}
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a split file: where it is (line or row number), its text and its canonical label."""

    place: int
    text: str
    label: str


def text_value(value: object) -> str:
    """A text cell as the text it holds: strings trimmed; null (None, NaN) is the empty text.

    A number, true/false, an object or a list is not a text: a JSON ``0`` or a Parquet integer column is refused
    rather than guessed at (CSV cells are always text, so ``0`` there is the text "0").

    Raises:
        ValueError: a value that is not a string, e.g. ``0 (int), not a text``.
    """
    if isinstance(value, str):
        return value.strip()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    raise ValueError(f"{repr(value)[:60]} ({type(value).__name__}), not a text")


def check_columns(where: str, columns: list[str], text_col: str, label_col: str) -> None:
    """Refuse a header without the text or label column, naming the columns it has and the setting to change."""
    for col, key in ((text_col, "data.text_column"), (label_col, "data.label_column")):
        if col not in columns:
            raise UserError(f"{where} has no column '{col}' (columns: {', '.join(columns)}); set --set {key}=<name>")


def to_row(where: str, place: int, text: object, label: object, text_col: str, label_col: str) -> Row:
    """The row at ``where`` ``place`` (e.g. ``train.csv line`` 3) from its raw text and label values.

    Raises:
        UserError: a text that is not a text, or a label with no class, naming the place and the column.
    """
    try:
        clean = text_value(text)
    except ValueError as err:
        raise UserError(f"{where} {place}: '{text_col}' is {err}; point data.text_column at a text field") from None
    try:
        return Row(place, clean, canonical_label(label))
    except LabelError as err:
        raise UserError(f"{where} {place}: column '{label_col}' has {err}") from None


def refuse_binary(path: Path, kind: str) -> None:
    """Refuse a gzip file, a zip or Excel workbook or a Parquet file where ``kind`` text (CSV, JSON) is expected."""
    with path.open("rb") as fh:
        head = fh.read(4)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise UserError(f"{path} is {what}, not {kind} text")


def _not_decodable(path: Path, encoding: str) -> UserError:
    """The error for a file not in ``encoding``, naming the first bad byte's offset and line (found streaming)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    with path.open("rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if codecs.lookup(encoding).name == "utf-8" and head in _UTF16_BOMS:
            return UserError(f"{path} starts with a UTF-16 byte-order mark: set --set data.encoding=utf-16")
        while chunk := fh.read(CHUNK):
            data = decoder.getstate()[0] + chunk  # the bytes of a character cut by the last chunk, then this one
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                at = offset - (len(data) - len(chunk)) + err.start
                line = lines + data.count(b"\n", 0, err.start)
                return UserError(
                    f"{path} is not {encoding}: byte 0x{data[err.start]:02x} at offset {at:,} (line {line}) cannot "
                    "be decoded; set its encoding with --set data.encoding=NAME (e.g. latin-1 or cp1252)"
                )
            offset, lines = offset + len(chunk), lines + chunk.count(b"\n")
    return UserError(f"{path} ends inside a character: it is not {encoding}; set --set data.encoding=NAME")


def _open(path: Path, encoding: str) -> IO[str]:
    """``path`` as text; a UTF-8 file may start with a byte-order mark (spreadsheets write one)."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    return path.open(encoding="utf-8-sig" if utf8 else encoding, newline="")


def _delimiter(path: Path, header: str, columns: tuple[str, ...]) -> str:
    """The delimiter under which the header holds ``columns``; else the one giving most columns (for the error)."""
    fields = {d: [c.strip() for c in next(csv.reader([header], delimiter=d), [])] for d in DELIMITERS}
    for d, cols in fields.items():
        if all(c in cols for c in columns):
            if d != ",":
                log.info("%s: reading as %s-separated (its header has %s so)", path, DELIMITERS[d], columns)
            return d
    return max(fields, key=lambda d: len(fields[d]))


def csv_delimiter(path: Path, columns: tuple[str, ...], encoding: str = "utf-8") -> str:
    """The delimiter of a ``.csv``: a comma, or a tab, semicolon or bar when only that gives a header with ``columns``.

    Raises:
        UserError: the file is compressed, a workbook or Parquet (see ``refuse_binary``).
    """
    refuse_binary(path, "CSV")
    with path.open(encoding=encoding, errors="replace", newline="") as fh:
        return _delimiter(path, fh.readline(FIELD_LIMIT).lstrip("\ufeff"), columns)


def _csv_header(path: Path, reader: Any, delimiter: str, text_col: str, label_col: str) -> list[str]:
    header: list[str] | None = next(reader, None)
    if header is None:
        raise UserError(f"{path} is empty: expected a header line naming the columns (e.g. text,label) and rows")
    columns = [c.strip() for c in header]  # "text, label" names the column label
    where = str(path) if delimiter == "," else f"{path} (read as {DELIMITERS[delimiter]}-separated)"
    check_columns(where, columns, text_col, label_col)
    for col in (text_col, label_col):
        if columns.count(col) > 1:
            raise UserError(
                f"{path}: column '{col}' appears {columns.count(col)} times in the header; rename the copies"
            )
    return columns


def _csv_rows(path: Path, text_col: str, label_col: str, encoding: str) -> Generator[Row, None, None]:
    """CSV through ``csv`` (strict quoting) so texts like 'NA' stay text; ragged rows and bad quoting are refused."""
    refuse_binary(path, "CSV")
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        with _open(path, encoding) as fh:
            delimiter = _delimiter(path, fh.readline(FIELD_LIMIT), (text_col, label_col))
            fh.seek(0)
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            line = 1
            try:
                columns = _csv_header(path, reader, delimiter, text_col, label_col)
                ti, li = columns.index(text_col), columns.index(label_col)
                line = reader.line_num + 1
                for row in reader:
                    if row and len(row) != len(columns):
                        raise UserError(
                            f"{path} line {line}: {len(row)} fields where the header has {len(columns)} "
                            f'({", ".join(columns)}); quote texts that hold the delimiter ("a, b") or fix the row'
                        )
                    if row:  # csv yields [] for a blank line
                        yield to_row(f"{path} line", line, row[ti], row[li], text_col, label_col)
                    line = reader.line_num + 1
            except csv.Error as err:
                raise UserError(
                    f"{path} line {line}: not valid CSV ({err}); check the quotes of that row (a quote opened and "
                    "never closed swallows the rest of the file)"
                ) from None
    except UnicodeDecodeError:
        raise _not_decodable(path, encoding) from None
    finally:
        csv.field_size_limit(previous)


def _more(fh: IO[str], buf: str, pos: int) -> tuple[str, bool]:
    """``buf`` from ``pos`` plus the next chunk (at least as long as what is kept); and whether the file ended."""
    chunk = fh.read(max(CHUNK, len(buf) - pos))
    return buf[pos:] + chunk, not chunk


def _punctuation(path: Path, line: int, ch: str, expect: str) -> str | None:
    """What a JSON array expects after punctuation ``ch``, or None where ``ch`` starts an item.

    "item" after '[', "next" after ',', "end" after the closing ']'. ``expect`` is the state before ``ch``: "[" (at
    the start), "item" (after '['), "next" (after ',') or "," (after an item).
    """
    if expect == "[" or (expect == "," and ch not in ",]"):
        if ch != expect:
            raise UserError(f"{path} line {line}: not valid JSON (expected '{expect}')")
        return "item"
    if ch == "]" and expect != "next":
        return "end"
    if ch == "," and expect == ",":
        return "next"
    return None


def _array_items(path: Path, fh: IO[str]) -> Iterator[Any]:
    """The items of a JSON array, decoded one at a time from a buffer that holds about one item."""
    decoder = json.JSONDecoder()
    buf, pos, line, eof, expect = "", 0, 1, False, "["
    while True:
        end = _WS.match(buf, pos).end()  # type: ignore[union-attr]  # the pattern matches the empty string
        line, pos = line + buf.count("\n", pos, end), end
        if pos == len(buf):
            if eof:
                raise UserError(f"{path} line {line}: not valid JSON (the array is not closed with ']')")
            (buf, eof), pos = _more(fh, buf, pos), 0
            continue
        after = _punctuation(path, line, buf[pos], expect)
        if after == "end":
            return
        if after is not None:
            pos, expect = pos + 1, after
            continue
        try:
            item, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as err:
            if eof or len(buf) - pos > FIELD_LIMIT:  # not cut by the buffer's end: invalid
                at = line + buf.count("\n", pos, err.pos)
                raise UserError(f"{path} line {at}: not valid JSON ({err.msg})") from None
            (buf, eof), pos = _more(fh, buf, pos), 0
            continue
        if end == len(buf) and not eof:  # a number or literal may go on in the next chunk
            (buf, eof), pos = _more(fh, buf, pos), 0
            continue
        yield item
        line, pos, expect = line + buf.count("\n", pos, end), end, ","


def _is_array(path: Path, encoding: str) -> bool:
    """Whether a ``.json`` file holds an array (else it is read as JSON lines)."""
    if path.suffix != ".json":
        return False
    with path.open(encoding=encoding, errors="replace") as fh:
        return fh.read(CHUNK).lstrip("\ufeff \t\r\n").startswith("[")


def _json_rows(path: Path, text_col: str, label_col: str, encoding: str, array: bool) -> Generator[Row, None, None]:
    """A JSON array of objects, or JSON lines (one object per line)."""
    refuse_binary(path, "JSON")
    try:
        with _open(path, encoding) as fh:
            if array:
                yield from _records(path, "row", enumerate(_array_items(path, fh), 1), text_col, label_col)
            else:
                yield from _records(path, "line", _json_lines(path, fh), text_col, label_col)
    except UnicodeDecodeError:
        raise _not_decodable(path, encoding) from None


def _json_lines(path: Path, fh: IO[str]) -> Iterator[tuple[int, Any]]:
    for n, line in enumerate(fh, 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path} line {n}: not valid JSON ({err.msg})") from None


def _records(
    path: Path, unit: str, items: Iterator[tuple[int, Any]], text_col: str, label_col: str
) -> Generator[Row, None, None]:
    for n, record in items:
        if not isinstance(record, dict):
            raise UserError(f"{path} {unit} {n}: expected an object with '{text_col}' and '{label_col}'")
        check_columns(f"{path} {unit} {n}", list(record), text_col, label_col)
        yield to_row(f"{path} {unit}", n, record[text_col], record[label_col], text_col, label_col)


def _parquet_rows(path: Path, text_col: str, label_col: str) -> Generator[Row, None, None]:
    """Parquet in record batches through pyarrow (no datasets cache is written anywhere)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path} is not a readable Parquet file ({str(err).splitlines()[0][:200]})") from None
    check_columns(str(path), list(pf.schema_arrow.names), text_col, label_col)
    n = 0
    batches = pf.iter_batches(batch_size=4096, columns=[text_col, label_col])
    while True:
        try:
            cols = next(batches).to_pydict()
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{path} row {n + 1}: cannot be read ({str(err).splitlines()[0][:200]})") from None
        for text, label in zip(cols[text_col], cols[label_col], strict=True):
            n += 1
            yield to_row(f"{path} row", n, text, label, text_col, label_col)


def row_unit(path: Path, encoding: str) -> str:
    """What ``Row.place`` counts in ``path``: ``line`` (CSV, JSON lines) or ``row`` (JSON arrays, Parquet)."""
    return "row" if path.suffix == ".parquet" or _is_array(path, encoding) else "line"


def read_rows(path: Path, text_col: str, label_col: str, encoding: str) -> Generator[Row, None, None]:
    """One pass over ``path``'s rows (close it to stop early)."""
    if path.suffix == ".csv":
        return _csv_rows(path, text_col, label_col, encoding)
    if path.suffix == ".parquet":
        return _parquet_rows(path, text_col, label_col)
    return _json_rows(path, text_col, label_col, encoding, _is_array(path, encoding))
