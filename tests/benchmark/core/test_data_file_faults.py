"""The data files and labels the readers accept (with what they mean), and those they refuse in one line."""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.errors import UserError
from benchmark.core.text_data import load_split


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_a_utf8_byte_order_mark_is_read(tmp_path) -> None:
    """Item 7: what spreadsheet programs write; the first column is 'text', not '\\ufefftext'."""
    folder = tmp_path / "bom"
    _csv(folder / "train.csv", "\ufefftext,label\ncaf\u00e9,a\nthe end,b\n")
    split = load_split(str(folder), "train", ".")
    assert split.texts == ["caf\u00e9", "the end"] and split.label_names == ["a", "b"]


def test_another_encoding_is_read_when_named(tmp_path) -> None:
    """Item 7: latin-1 is refused as UTF-8 (naming the offset and data.encoding) and read when named."""
    folder = tmp_path / "latin"
    _csv(folder / "train.csv", "text,label\nd\u00e9j\u00e0 vu,a\nnope,b\n", "latin-1")
    with pytest.raises(UserError, match=r"byte 0xe9 at offset 12 \(line 2\).*data\.encoding"):
        load_split(str(folder), "train", ".")
    assert load_split(str(folder), "train", ".", encoding="latin-1").texts == ["d\u00e9j\u00e0 vu", "nope"]


def test_numeric_labels_are_one_class_per_value_across_splits_and_files(tmp_path) -> None:
    """Item 5: '1', '1.0' and 1.0 (JSON) are one class in every split, so train and test agree."""
    folder = tmp_path / "mixed"
    _csv(folder / "train.csv", "text,label\na,1\nb,1.0\nc,0\nd,2.50\n")
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"text": "e", "label": 1.0}]))
    train, test = load_split(str(folder), "train", "."), load_split(str(folder), "test", ".")
    assert train.label_names == test.label_names == ["0", "1", "2.5"]
    assert train.labels.tolist() == [1, 1, 0, 2] and test.labels.tolist() == [1]


def test_empty_texts_are_kept_with_one_warning(tmp_path, caplog) -> None:
    """Item 5 (accepted): empty and whitespace-only texts are rows of the split; a warning counts and places them."""
    folder = tmp_path / "empties"
    _csv(folder / "train.csv", 'text,label\ngood,a\n"",b\n"   ",a\n"two\nlines",b\n,a\n')
    with caplog.at_level(logging.WARNING):
        split = load_split(str(folder), "train", ".")
    assert split.texts == ["good", "", "", "two\nlines", ""]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 empty or whitespace-only text(s)" in warnings[0] and "lines 3, 4, 7" in warnings[0]


def test_label_spellings_that_mean_the_same_are_one_class(tmp_path) -> None:
    """NFC and NFD, a zero-width space or joiner, a BOM, no-break and doubled spaces: one class each."""
    folder = tmp_path / "spellings"
    nfc, nfd = "n\u00e9gatif", "ne\u0301gatif"
    _csv(folder / "train.csv", f"text,label\na,{nfc}\nb,pos\u200b\nc,very  good\nd,\u00a0pos\ne,{nfc}\n")
    _csv(folder / "test.csv", f"text,label\nf,{nfd}\ng,\ufeffpos\nh,very good\u200d\ni, pos \n")
    train, test = load_split(str(folder), "train", "."), load_split(str(folder), "test", ".")
    assert train.label_names == test.label_names == [nfc, "pos", "very good"]
    assert train.labels.tolist() == [0, 1, 2, 1, 0] and test.labels.tolist() == [0, 1, 2, 1]


def test_numbers_and_true_false_are_one_class_per_value_in_any_type(tmp_path) -> None:
    """'+1', '1e0', fullwidth '１', JSON 1 are the class 1; JSON true, 'TRUE', 'True' are the class true."""
    nums, bools = tmp_path / "nums", tmp_path / "bools"
    _csv(nums / "train.csv", "text,label\na,+1\nb,1e0\nc,\uff11\nd,0\ne,-0\n")
    (nums / "test.jsonl").write_text('{"text": "f", "label": 1}\n{"text": "g", "label": 0.0}\n')
    train, test = load_split(str(nums), "train", "."), load_split(str(nums), "test", ".")
    assert train.label_names == test.label_names == ["0", "1"]
    assert train.labels.tolist() == [1, 1, 1, 0, 0] and test.labels.tolist() == [1, 0]
    (bools / "train.jsonl").parent.mkdir()
    (bools / "train.jsonl").write_text('{"text": "a", "label": true}\n{"text": "b", "label": false}\n')
    _csv(bools / "test.csv", "text,label\nc,TRUE\nd,False\ne,true\n")
    train, test = load_split(str(bools), "train", "."), load_split(str(bools), "test", ".")
    assert train.label_names == test.label_names == ["false", "true"]
    assert train.labels.tolist() == [1, 0] and test.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("train", "test", "needle"),
    [
        ("1,0", "pos,neg", "train.csv has number labels ('0', '1') but"),
        ("true,false", "1,0", "has true/false labels ('false', 'true') but"),
        ("pos,neg", "pos,neg,Neg", "labels 'neg' (train.csv line 3) and 'Neg' (test.csv line 4) differ only by case"),
        ("pos,neg", "pos,neg,other", "1 of 3 rows (33%) have labels that"),
    ],
)
def test_labels_that_cannot_be_mapped_are_refused_for_every_split(tmp_path, train, test, needle) -> None:
    """Whichever split is asked for: the label mapping spans every split, so each load refuses the same way."""
    folder = tmp_path / "labels"
    _csv(folder / "train.csv", "text,label\n" + "".join(f"t{i},{v}\n" for i, v in enumerate(train.split(","))))
    _csv(folder / "test.csv", "text,label\n" + "".join(f"u{i},{v}\n" for i, v in enumerate(test.split(","))))
    for split in ("train", "test"):
        with pytest.raises(UserError, match=re.escape(needle)):
            load_split(str(folder), split, ".")


def test_a_csv_field_longer_than_the_csv_module_default_is_read(tmp_path) -> None:
    """A 150 KB contract: over ``csv``'s default field limit of 131,072 characters."""
    contract = "clause " * 21_500  # 150,500 characters
    _csv(tmp_path / "long" / "train.csv", f'text,label\n"{contract}",a\nshort,b\n')
    split = load_split(str(tmp_path / "long"), "train", ".")
    assert split.texts == [contract.strip(), "short"]
    assert csv.field_size_limit() == 131_072  # the module's limit is restored for everyone else


@pytest.mark.parametrize(("sep", "name"), [("\t", "tab"), (";", "semicolon"), ("|", "bar")])
def test_a_csv_separated_otherwise_is_read_when_its_header_says_so(tmp_path, caplog, sep, name) -> None:
    folder = tmp_path / name
    _csv(folder / "train.csv", f"id{sep}text{sep}label\n1{sep}good, fine{sep}a\n2{sep}bad{sep}b\n")
    with caplog.at_level(logging.INFO, logger="benchmark.core.text_readers"):
        split = load_split(str(folder), "train", ".")
    assert split.texts == ["good, fine", "bad"] and split.label_names == ["a", "b"]
    assert f"reading as {name}-separated" in caplog.text


def test_csv_header_names_are_trimmed(tmp_path) -> None:
    """'text, label' (a space after the comma, as typed by hand) names the columns text and label."""
    _csv(tmp_path / "spaced" / "train.csv", "text , label\ngood, a\nbad,b\n")
    split = load_split(str(tmp_path / "spaced"), "train", ".")
    assert split.texts == ["good", "bad"] and split.label_names == ["a", "b"]


def test_crlf_line_ends_leave_no_carriage_return(tmp_path) -> None:
    """Windows line ends, also inside a quoted multi-line text: the texts and labels carry no '\\r'."""
    _csv(tmp_path / "crlf" / "train.csv", 'text,label\r\ngood,a\r\n"two\r\nlines",b\r\n')
    split = load_split(str(tmp_path / "crlf"), "train", ".")
    assert split.texts == ["good", "two\r\nlines"] and split.label_names == ["a", "b"]


def test_a_text_column_of_numbers_is_warned_about(tmp_path, caplog) -> None:
    """CSV cells are text, so '17' is kept, but a column of numbers only is likely the wrong column."""
    _csv(tmp_path / "ids" / "train.csv", "text,label\n17,a\n18,b\n19.5,a\n")
    with caplog.at_level(logging.WARNING):
        split = load_split(str(tmp_path / "ids"), "train", ".")
    assert split.texts == ["17", "18", "19.5"]
    assert "every text in column 'text' is a number (e.g. '17'): is data.text_column the text column?" in caplog.text


def test_parquet_is_read_without_the_datasets_library_or_a_home_cache(tmp_path, monkeypatch) -> None:
    """No Hugging Face datasets cache under the home folder: pyarrow reads the file, in batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setitem(sys.modules, "datasets", None)  # importing it now fails
    (tmp_path / "pq").mkdir()
    table = pa.table({"text": [" good ", None, "bad"], "label": [1, 0, 1], "other": [1.5, 2.5, 3.5]})
    pq.write_table(table, tmp_path / "pq" / "train.parquet", row_group_size=2)
    split = load_split(str(tmp_path / "pq"), "train", ".")
    assert split.texts == ["good", "", "bad"] and split.labels.tolist() == [1, 0, 1]
    assert not any(home.iterdir())


def test_a_broken_link_as_a_split_file_or_dataset_is_refused_in_one_line(tmp_path) -> None:
    """The dataset's split file, or the dataset itself, is a dangling symbolic link (a folder: the catalogue)."""
    folder = tmp_path / "linked"
    _csv(folder / "test.csv", "text,label\na,x\nb,y\n")
    (folder / "train.csv").symlink_to(tmp_path / "moved-away.csv")
    (tmp_path / "data.csv").symlink_to(tmp_path / "gone.csv")
    for dataset, target in ((folder, "moved-away.csv"), (tmp_path / "data.csv", "gone.csv")):
        with pytest.raises(UserError, match=rf"is a broken symbolic link \(to .*{target}\): point it") as err:
            load_split(str(dataset), "test" if dataset == folder else "train", ".")
        assert "\n" not in str(err.value)


def test_an_unreadable_split_file_is_named_in_one_line(tmp_path, monkeypatch) -> None:
    """Permission denied (patched: the tests may run as root, who reads anything)."""
    folder = tmp_path / "locked"
    _csv(folder / "train.csv", "text,label\na,x\nb,y\n")
    real_open = Path.open

    def denied(self: Path, *args: object, **kwargs: object):  # noqa: ANN202
        if self.name == "train.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(UserError, match=r"cannot read .*train\.csv: Permission denied; check the file"):
        load_split(str(folder), "train", ".")


def test_a_json_array_is_decoded_item_by_item_across_buffer_ends(tmp_path, monkeypatch) -> None:
    """A 7-character read buffer: items, strings holding brackets and escapes, numbers cut at the buffer's end."""
    from benchmark.core import text_readers

    monkeypatch.setattr(text_readers, "CHUNK", 7)
    records = [
        {"text": 'say "hi" [ok]', "label": 12345},
        {"label": 0.5, "text": "caf\u00e9 \\ {x}"},
        {"text": "", "label": 12345, "extra": [1, {"a": "]"}]},
    ]
    path = tmp_path / "arr" / "train.json"
    path.parent.mkdir()
    path.write_text(" [\n" + ",\n  ".join(json.dumps(r) for r in records) + "\n]\n")
    split = load_split(str(path.parent), "train", ".")
    assert split.texts == [r["text"] for r in records] and split.label_names == ["0.5", "12345"]
    assert split.labels.tolist() == [1, 0, 1]
    path.write_text(json.dumps(records[:2])[:-1] + ",]")
    with pytest.raises(UserError, match=r"train\.json line 1: not valid JSON"):
        load_split(str(path.parent), "train", ".")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_limit_bounds_memory_and_keeps_todays_subset(tmp_path, suffix) -> None:
    """A file of 8 MB read with --limit 20 peaks far below its size; the rows are today's seeded subset."""
    n, width = 4000, 2000
    rows = [{"text": f"row {i} " + "x" * width, "label": "ab"[i % 2]} for i in range(n)]
    path = tmp_path / "big" / f"train{suffix}"
    path.parent.mkdir()
    if suffix == ".csv":
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    size = path.stat().st_size
    _csv(tmp_path / "warm" / "train.csv", "text,label\na,x\nb,y\n")
    load_split(str(tmp_path / "warm"), "train", ".", limit=1)  # lazy imports are not the reader's memory
    tracemalloc.start()
    try:
        subset = load_split(str(path.parent), "train", ".", limit=20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 8_000_000 and peak < size / 8, (size, peak)
    want = np.sort(np.random.default_rng(0).choice(n, size=20, replace=False))  # how --limit has always drawn
    assert subset.texts == [rows[i]["text"] for i in want]
    assert subset.labels.tolist() == [i % 2 for i in want]
