"""No lost work under concurrent commands, and the inputs we accept rather than refuse (with what they mean).

Two real processes on one cache key, a real socket on the UI's port, the kill window of a trial's MLflow run,
and the data the readers accept: a UTF-8 byte-order mark, another encoding when named, one class per numeric
label value, empty texts (kept, with a warning).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.core.cache import is_complete
from benchmark.core.errors import UserError
from benchmark.core.text_data import load_split

REPO = Path(__file__).resolve().parents[1]


def _extract_argv(model: Path, data: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "extract",
        "--model",
        str(model),
        "--dataset",
        str(data),
        "--split",
        "train",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--no-progress",
        "--set",
        f"paths.cache_dir={cache}",
        "--set",
        "extract.chunk_size=8",
        *extra,
    ]


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _start_extract(argv: list[str], cwd: Path, stderr: int) -> subprocess.Popen[str]:
    """``layerfuse extract`` (``argv``) in a process of its own, importing this checkout."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", *argv],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _wait_for_first_chunk(proc: subprocess.Popen[str], cache: Path) -> None:
    """Return once the extraction wrote its first chunk (or ended, or 120 s passed): it is mid-extraction then."""
    deadline = time.monotonic() + 120
    while not any(cache.rglob("chunk_00000.npy")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def test_overwrite_always_refuses_while_another_process_extracts(tiny_models, tmp_path, capsys) -> None:
    """Item 1: the second command deletes nothing and is refused; the first one finishes."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=160, n_test=4)  # 20 chunks of 8, each written with fsync
    cache = tmp_path / "cache"
    argv = _extract_argv(tiny_models["bert-a"], data, cache)
    first = _start_extract(argv, tmp_path, subprocess.STDOUT)
    try:
        _wait_for_first_chunk(first, cache)
        first.send_signal(signal.SIGSTOP)  # mid-extraction, holding the lock: the window of the reported loss
        partial = next(cache.rglob("*.partial"))
        before = _tree(partial)
        assert any(name.startswith("chunk_") for name in before)

        code = main([*argv, "--overwrite", "always"])
        err = capsys.readouterr().err
        assert code == 2 and "another process is writing" in err and len(err.strip().splitlines()) == 1, err
        assert _tree(partial) == before  # not one chunk deleted
    finally:
        first.send_signal(signal.SIGCONT)
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    final = partial.with_name(partial.name.removesuffix(".partial"))
    assert is_complete(final) and not partial.exists()


def test_ui_refuses_a_port_in_use(tmp_path, monkeypatch, capsys) -> None:
    """Item 4: a real listening socket on the port; the UI says so before creating its store or starting."""
    for name in ("execv", "execve"):
        monkeypatch.setattr(os, name, lambda *a: pytest.fail(f"the UI started: {a}"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["ui", "--port", str(port), "--set", f"tracking.uri=sqlite:///{tmp_path}/ui/mlflow.db"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --port {port + 1}" in err
    assert not (tmp_path / "ui").exists()


def test_a_trial_run_orphaned_by_a_kill_is_closed(tmp_path) -> None:
    """Item 2: a worker killed between creating a trial's run and linking it; resume and the stale check close it."""
    import optuna

    from benchmark.core import tracking
    from benchmark.core.config_sections import TrackingConfig
    from studies.run.orphans import close_orphan_runs
    from studies.run.parent_run import close_stale_run
    from studies.run.storage import make_storage
    from studies.trials.objective import StudyRuns, create_trial_run

    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    mlc = tracking.client(cfg)
    exp = tracking.ensure_experiment(mlc, "layerfuse/orphans", cfg)
    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path}/optuna.db", 1))
    parent = mlc.create_run(exp, tags={tracking.TAG_STUDY: "s", tracking.TAG_KIND: tracking.KIND_STUDY}).info.run_id
    study.set_user_attr("mlflow_parent_run_id", parent)
    runs = StudyRuns(mlc, exp, parent, "s", "search")

    def killed_in_the_window() -> tuple[optuna.Trial, str]:
        trial = study.ask()
        return trial, create_trial_run(runs, trial.number)  # the kill: mlflow_run_id is never recorded

    stale, stale_run = killed_in_the_window()
    resumed, resumed_run = killed_in_the_window()
    alive = study.ask()
    alive_run = create_trial_run(runs, alive.number)
    alive.set_user_attr("mlflow_run_id", alive_run)

    # The stale-heartbeat callback fails the first dead trial; it has no run id, so the run is found by its tags.
    study.tell(stale, state=optuna.trial.TrialState.FAIL)
    close_stale_run(mlc)(study, study.trials[stale.number])
    assert mlc.get_run(stale_run).info.status == "FAILED"
    assert mlc.get_run(resumed_run).info.status == "RUNNING"  # its trial still counts as running
    # The second dead trial is failed (stale) before a rerun; the rerun closes what is left.
    study.tell(resumed, state=optuna.trial.TrialState.FAIL)
    assert close_orphan_runs(study, mlc, parent) == 1
    run = mlc.get_run(resumed_run)
    assert run.info.status == "FAILED" and run.data.tags[tracking.TAG_STATE] == "FAIL"
    assert "before the run was linked" in run.data.tags[tracking.TAG_ERROR]
    assert mlc.get_run(alive_run).info.status == "RUNNING"  # a live trial's run is left alone
    assert close_orphan_runs(study, mlc, parent) == 0


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


# ---- issue 29, class 1: a label has one identity across files, types and spellings (the accepted side)


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


# ---- issue 29, class 2: readers that never guess and never run away (the accepted side)


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


def test_predict_reads_texts_as_training_does(tmp_path) -> None:
    """predict's input: a JSON array (not read as one line of columns), a tab-separated .csv, trimmed texts, null."""
    from benchmark.serve.predict import read_table, texts_of

    array, tabs = tmp_path / "in.json", tmp_path / "in.csv"
    array.write_text('[{"id": 1, "text": " good "},\n {"id": 2, "text": null}]\n')
    tabs.write_text("id\ttext\n1\t good film \n2\tbad, really\n")
    assert texts_of(read_table(array), "text", array) == ["good", ""]
    assert texts_of(read_table(tabs), "text", tabs) == ["good film", "bad, really"]
    (tmp_path / "numbers.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(UserError, match=r"row 1 of column 'text' is 3 \(int\), not a text"):
        texts_of(read_table(tmp_path / "numbers.jsonl"), "text", tmp_path / "numbers.jsonl")


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


def test_safetensors_are_preferred_over_a_pickle_beside_them(tiny_models, tmp_path) -> None:
    """Item 10: a folder with both loads the safetensors (the pickle, which the safe loader refuses, is never read)."""
    import argparse
    import shutil

    import torch

    from benchmark.core.models import resolve_model
    from extractors.hf import HFHiddenStateExtractor

    folder = tmp_path / "both"
    shutil.copytree(tiny_models["bert-a"], folder)
    torch.save({"note": argparse.Namespace(a=1)}, folder / "pytorch_model.bin")
    spec = resolve_model(str(folder), ".")
    ex = HFHiddenStateExtractor(spec, device="cpu", dtype="fp32", pooling="mean", max_length=16)
    feats, _ = ex.encode_ids(ex.tokenize(["good film"]))
    assert feats.shape[:2] == (3, 1) and np.isfinite(feats).all()


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


# ---------------------------------------------------------------- faults end in one line (issue 29, class 3)


def _one_line(err: str, needle: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    return lines[0]


@contextmanager
def _small_disk(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` (root, Linux); yields a function that resizes it. Skips where not allowed."""
    path.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False).returncode:
        pytest.skip("no tmpfs here (needs root); test_disk_full_with_a_patched_writer covers the writer")

    def resize(new: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def _read_only(path: Path):
    """``path`` (recursively) unwritable: immutable for root, whom permission bits do not stop; else chmod a-w."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "-R", "+i", str(path)], check=False, capture_output=True).returncode:
            pytest.skip("chattr +i is not supported on this file system")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", str(path)], check=True)
        return
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def _clean_cache(tiny_models, data: Path, root: Path) -> dict[str, bytes]:
    """Layer and label files of one uninterrupted extraction (chunks of 8), to compare resumed ones against."""
    cache = root / "clean"
    assert main(_extract_argv(tiny_models["bert-a"], data, cache)) == 0
    return _feature_bytes(cache)


def _feature_bytes(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in cache.rglob("*.npy") if ".partial" not in str(p)}


def test_disk_full_during_extraction_ends_in_one_line_and_a_rerun_completes(tiny_models, tmp_path, capsys) -> None:
    """A 128 KB tmpfs fills after a few chunks: one line with the space needed, no torn file; the rerun finishes."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=160, n_test=4)  # 20 chunks of 8 rows, 12 KB each on tmpfs
    clean = _clean_cache(tiny_models, data, tmp_path)
    capsys.readouterr()
    with _small_disk(tmp_path / "disk", "128k") as resize:
        cache = tmp_path / "disk" / "cache"
        argv = _extract_argv(tiny_models["bert-a"], data, cache)
        assert main(argv) == 2
        line = _one_line(capsys.readouterr().err, "no space left on the device of")
        assert "chunks done, kept): finishing needs about" in line and "free" in line and "rerun" in line
        (partial,) = cache.rglob("*.partial")
        assert not list(partial.glob("*.tmp*"))  # nothing half-written keeps the disk full
        done = sorted(partial.glob("chunk_*[0-9].npy"))
        assert 0 < len(done) < 20
        resize("4m")
        assert main(argv) == 0
        assert _feature_bytes(cache) == clean and not list(cache.rglob("*.partial"))


def test_disk_full_with_a_patched_writer(tiny_models, tmp_path, monkeypatch, capsys) -> None:
    """Where no tmpfs can be mounted: the chunk writer hits ENOSPC on its fourth file; its own .tmp file is removed."""
    import errno

    from conftest import write_dataset

    from benchmark.core import cache_writer

    data = write_dataset(tmp_path / "data", n_train=40, n_test=4)
    real, calls = cache_writer.atomic_save_npy, []

    def full(path: Path, array: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 4:
            path.with_name(path.name + ".tmp").write_bytes(b"torn")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, array)

    monkeypatch.setattr(cache_writer, "atomic_save_npy", full)
    cache = tmp_path / "cache"
    assert main(_extract_argv(tiny_models["bert-a"], data, cache)) == 2
    _one_line(capsys.readouterr().err, "while writing chunk 1 (1 of 5 chunks done, kept)")
    (partial,) = cache.rglob("*.partial")
    assert not list(partial.glob("*.tmp*")) and (partial / "chunk_00000.npy").is_file()


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


def test_a_complete_read_only_cache_is_read_and_a_missing_key_refused(tiny_models, tmp_path, capsys) -> None:
    """Immutable (root) or read-only cache: extract's cache hits pass, a key to write is one line, nothing changes."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=16, n_test=4)
    cache = tmp_path / "cache"
    argv = _extract_argv(tiny_models["bert-a"], data, cache)
    assert main(argv) == 0
    before = _tree(cache)
    with _read_only(cache):
        assert main(argv) == 0  # all cache hits: nothing to write
        capsys.readouterr()
        assert main([*argv, "--limit", "5"]) == 2
        _one_line(capsys.readouterr().err, "cannot write")
    assert _tree(cache) == before


def test_a_read_only_cache_serves_and_computes_layer_sweeps_without_storing(tmp_path, monkeypatch) -> None:
    """The sweep store needs no write access: a stored sweep is read, a missing one computed and not stored."""
    from benchmark.core.config import load_config
    from studies.run.caches import ModelDirs
    from studies.trials import sweep_store

    train = tmp_path / "train"
    train.mkdir()
    for f in ("meta.json", "labels.npy"):
        (train / f).write_text("x")
    monkeypatch.setattr(sweep_store, "sweep_key", lambda d, cfg: "k" + str(cfg.study.seeds))
    calls = []

    def sweep(*args: object, **kw: object) -> list[list[object]]:
        calls.append(1)
        return []

    monkeypatch.setattr(sweep_store, "sweep_units", sweep)
    d = ModelDirs(train=train, test=train, val=None)
    cfg = load_config(env={})
    assert sweep_store.unit_sweep(d, cfg).scores == [] and len(calls) == 1  # stored now
    other = load_config(env={}, **{"study.seeds": 2})
    with _read_only(train):
        assert sweep_store.unit_sweep(d, cfg).scores == [] and len(calls) == 1  # read, no lock file needed
        assert sweep_store.unit_sweep(d, other).scores == [] and len(calls) == 2  # computed, not stored
    assert not (train / "sweeps" / "k2.json").exists()


@pytest.mark.parametrize("setting", ["tracking.uri", "study.storage", "journal", "tracking.artifact_root"])
def test_stores_in_a_read_only_folder_fail_fast_in_one_line(setting, tmp_path, capsys) -> None:
    """No 170 s of SQLite retries: the unwritable folder is named before anything connects (journal: own case)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    value = {
        "tracking.uri": f"sqlite:///{locked}/mlflow.db",
        "study.storage": f"sqlite:///{locked}/optuna.db",
        "journal": f"journal:{locked}/study.log",
        "tracking.artifact_root": str(locked / "artifacts"),
    }[setting]
    key = "study.storage" if setting == "journal" else setting
    argv = [
        "study",
        "--preset",
        "search",
        "--models",
        "minilm-l6",
        "--dataset",
        str(tmp_path),
        "--set",
        f"{key}={value}",
    ]
    if key != "tracking.uri":
        argv += ["--set", f"tracking.uri=sqlite:///{tmp_path}/ok/mlflow.db"]
    start = time.monotonic()
    with _read_only(locked):
        assert main(argv) == 2
    _one_line(capsys.readouterr().err, f"cannot write in {locked}")
    # Far below the ~170 s SQLite spends retrying an unwritable folder, with room for a loaded CI machine.
    assert time.monotonic() - start < 90 and not list(locked.iterdir())


def test_the_single_split_refuses_an_empty_validation_set_naming_the_smallest_class() -> None:
    """300 classes of 1-2 rows: every class keeps its rows for training; refused before any training."""
    from lightning_modules.folds import check_cv_folds, fold_rows

    labels = np.repeat(np.arange(300), [1, 2] * 150)
    names = [f"c{i}" for i in range(300)]
    with pytest.raises(UserError, match=r"smallest class 'c0' has 1 training row.*data.val_fraction=0.25 or more"):
        check_cv_folds(labels, 0, "refuse", names, val_fraction=0.1)
    with pytest.raises(UserError, match="holds out no validation row"):
        fold_rows(labels, 0, 0.1, 0, "refuse")  # the split itself refuses too, for callers without the pre-flight
    assert len(fold_rows(labels, 0, 0.25, 0, "refuse")[0][1]) == 150
    assert len(fold_rows(labels, 0, 0.0, 0, "refuse")[0][1]) == 0  # a refit on all rows asks for no validation
    check_cv_folds(labels, 0, "refuse", names, val_fraction=None)  # the dataset's own validation split


def test_two_commands_create_one_fresh_mlflow_store_at_once(tmp_path) -> None:
    """Two processes set up the same new SQLite store together; the setup lock lets both succeed."""
    script = (
        "import sys, time\n"
        "from benchmark.core import tracking\n"
        "from benchmark.core.config_sections import TrackingConfig\n"
        "cfg = TrackingConfig(uri=sys.argv[1], artifact_root=sys.argv[2])\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # start together\n"
        "mlc = tracking.client(cfg)\n"
        "print(tracking.ensure_experiment(mlc, 'layerfuse/race', cfg))\n"
    )
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    start = str(time.time() + 8)  # after both processes imported MLflow
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, uri, str(tmp_path / "art"), start],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]  # one experiment, found by both


# ---------------------------------------------------------------- nothing left RUNNING or half-written (class 4)


def _runs(uri: str, kind: str) -> list:
    from mlflow.tracking import MlflowClient

    from benchmark.core import tracking

    mlc = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in mlc.search_experiments()]
    return list(mlc.search_runs(ids, f"tags.`{tracking.TAG_KIND}` = '{kind}'"))


def test_sigterm_on_extract_closes_its_run_and_the_rerun_resumes(tiny_models, tmp_path) -> None:
    """SIGTERM mid-extraction: one stderr line, exit 130, the run KILLED (not RUNNING); the rerun completes."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=160, n_test=4)
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path}/mlflow.db"
    argv = [*_extract_argv(tiny_models["bert-a"], data, cache), "--set", f"tracking.uri={uri}"]
    proc = _start_extract(argv, tmp_path, subprocess.PIPE)
    try:
        _wait_for_first_chunk(proc, cache)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "layerfuse: interrupted; rerun the same command to resume"
    assert "Traceback" not in err
    (run,) = _runs(uri, "extract")
    assert run.info.status == "KILLED" and "KeyboardInterrupt: signal SIGTERM" in run.data.tags["layerfuse.error"]
    assert main(argv) == 0 and is_complete(next(cache.rglob("meta.json")).parent)


def test_sigterm_on_a_study_closes_its_runs_as_ctrl_c_does(tiny_models, tmp_path) -> None:
    """SIGTERM while a trial trains: exit 130, the trial's run and the study's parent run closed, none RUNNING."""
    from conftest import write_dataset
    from mlflow.tracking import MlflowClient

    data = write_dataset(tmp_path / "data", n_train=60, n_test=8)
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path}/mlflow.db"
    extract = ["extract", "--model", str(tiny_models["bert-a"]), "--dataset", str(data), "--device", "cpu"]
    assert main([*extract, "--dtype", "fp32", "--no-progress", "--set", f"paths.cache_dir={cache}"]) == 0
    argv = ["study", "--preset", "search", "--models", str(tiny_models["bert-a"]), "--dataset", str(data)]
    argv += ["--trials", "50", "--storage", f"sqlite:///{tmp_path}/optuna.db", "--no-progress", "--no-pruning"]
    for key, value in {
        "extract.dtype": "fp32",
        "extract.device": "cpu",
        "paths.cache_dir": cache,
        "tracking.uri": uri,
        "tracking.artifact_root": tmp_path / "art",
        "train.max_epochs": 100000,  # a trial trains until the signal comes
        "train.patience": 100000,
    }.items():
        argv += ["--set", f"{key}={value}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not _running_trials(tmp_path / "optuna.db"):
            time.sleep(0.5)  # read from Optuna's tables with sqlite3: an MLflow client here would race the setup
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # only if it is still running: a failed test leaves no study training forever
    assert proc.returncode == 130 and "Traceback" not in err, err
    mlc = MlflowClient(tracking_uri=uri)
    runs = _runs(uri, "trial") + _runs(uri, "study")
    assert len(runs) >= 2 and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parent = next(r for r in runs if r.data.tags["layerfuse.run_kind"] == "study")
    assert mlc.get_run(parent.info.run_id).info.status == "KILLED"


def _running_trials(db: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_of_dead_processes_are_closed_by_the_next_command_of_their_kind(tiny_models, tmp_path) -> None:
    """A -9'd extract leaves its run RUNNING; the next extract (all cache hits) closes it; live, reused-pid and
    other-host runs: only the reused pid (own case) is closed too, the others are left alone."""
    from conftest import write_dataset
    from mlflow.tracking import MlflowClient

    from benchmark.core import tracking

    data = write_dataset(tmp_path / "data", n_train=8, n_test=4)
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path}/mlflow.db"
    argv = [*_extract_argv(tiny_models["bert-a"], data, cache), "--set", f"tracking.uri={uri}"]
    assert main(argv) == 0
    mlc = MlflowClient(tracking_uri=uri)
    (done,) = _runs(uri, "extract")
    me = tracking.owner_tags()
    owners = {
        "killed": {**me, tracking.TAG_PID: str(_dead_pid())},
        "reused pid": {**me, tracking.TAG_PID_START: "12345.00"},  # this pid, but another process's start time
        "alive": me,
        "other host": {**me, tracking.TAG_HOST: "elsewhere", tracking.TAG_PID: str(_dead_pid())},
    }
    ids = {
        name: mlc.create_run(done.info.experiment_id, tags={tracking.TAG_KIND: "extract", **tags}).info.run_id
        for name, tags in owners.items()
    }
    assert main(argv) == 0  # every key is complete: no run of its own, still the orphans are closed
    status = {name: mlc.get_run(i).info.status for name, i in ids.items()}
    assert status == {"killed": "KILLED", "reused pid": "KILLED", "alive": "RUNNING", "other host": "RUNNING"}
    assert "died without closing it" in mlc.get_run(ids["killed"]).data.tags[tracking.TAG_ERROR]


def test_sigterm_is_an_interrupt_inside_a_command(tmp_path) -> None:
    """The mechanism behind `study` and `report` under SIGTERM: the run ends KILLED, as with Ctrl-C."""
    from mlflow.tracking import MlflowClient

    from benchmark.core import tracking
    from benchmark.core.config_sections import TrackingConfig
    from benchmark.core.faults import interrupt_on_sigterm

    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"))
    mlc = tracking.client(cfg)
    exp = tracking.ensure_experiment(mlc, "layerfuse/term", cfg)
    with pytest.raises(KeyboardInterrupt), interrupt_on_sigterm():
        with tracking.tracked_run(mlc, exp, "r", tracking.KIND_REPORT, cfg) as run_id:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            pytest.fail("SIGTERM did not interrupt")
    assert MlflowClient(tracking_uri=cfg.uri).get_run(run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_an_interrupt_landing_in_a_garbage_collector_callback_is_not_lost() -> None:
    """Own case: Python ignores an exception raised in a weakref callback; the signal is raised again after it."""
    import weakref

    from benchmark.core.faults import interrupt_on_sigterm

    class Thing:
        pass

    def callback(ref: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, inside the callback, where raising is ignored
        sum(range(1000))

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupt_on_sigterm():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        for _ in range(200):
            time.sleep(0.01)
        pytest.fail(f"the interrupt was lost ({ref})")


def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path) -> None:
    """What killed reports and predictions leave (``.NAME.tmp-PID``) goes once PID is dead; a live one's stays."""
    from benchmark.core.faults import remove_stale

    dead = tmp_path / f".mr.tmp-{_dead_pid()}"
    live = tmp_path / f".mr.tmp-{os.getppid()}"
    mine = tmp_path / f".mr.tmp-{os.getpid()}"
    other = tmp_path / ".mr.tmp-notapid"
    for folder in (dead, live, mine, other):
        (folder / "sub").mkdir(parents=True)
    stale_file = tmp_path / f".scored.csv.tmp-{_dead_pid()}"
    stale_file.write_text("half")
    assert sorted(remove_stale(tmp_path, ".*.tmp-*")) == sorted([dead, stale_file])
    assert live.is_dir() and mine.is_dir() and other.is_dir()


def test_report_folders_are_one_to_one_with_the_studies_they_report() -> None:
    """``ü`` and ``é`` (and ``a b`` against ``a_b``) no longer share a folder; plain names keep theirs."""
    from benchmark.report.export import _name

    names = [_name([s], []) for s in ("ü", "é", "a b", "a_b", "x", "layer-sweep-mr-minilm-l6")]
    assert len(set(names)) == len(names)
    assert names[-2:] == ["x", "layer-sweep-mr-minilm-l6"]
    assert _name(["a", "b"], []) != _name(["a+b"], [])  # two studies, or one whose name holds the separator


def test_resume_with_another_chunk_size_is_byte_identical(tiny_models, tmp_path, monkeypatch, capsys) -> None:
    """Killed after two chunks of 8, resumed with extract.chunk_size=5: the recorded chunking is kept, the layer
    files equal an uninterrupted run's byte for byte."""
    from conftest import write_dataset

    from benchmark.core.cache_writer import CacheWriter

    data = write_dataset(tmp_path / "data", n_train=40, n_test=4)
    clean = _clean_cache(tiny_models, data, tmp_path)
    real, written = CacheWriter.write_chunk, []

    def killed_after_two(self: CacheWriter, i: int, *args: object, **kw: object) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(i)
        real(self, i, *args, **kw)

    monkeypatch.setattr(CacheWriter, "write_chunk", killed_after_two)
    cache = tmp_path / "cache"
    assert main(_extract_argv(tiny_models["bert-a"], data, cache)) == 130
    monkeypatch.undo()
    argv = [*_extract_argv(tiny_models["bert-a"], data, cache), "--set", "extract.chunk_size=5"]
    assert main(argv) == 0
    assert _feature_bytes(cache) == clean


def test_a_failed_prediction_write_leaves_no_output_file(tmp_path, monkeypatch) -> None:
    """Own case: predictions are written to a hidden temporary file and moved into place, never half-written."""
    import pandas as pd

    from benchmark.serve import predict

    src = tmp_path / "in.csv"
    src.write_text("text\ngood\nbad\n")
    out = tmp_path / "out" / "scored.csv"

    class Model:
        def predict(self, texts: list[str]) -> pd.DataFrame:
            return pd.DataFrame({"label": ["pos"] * len(texts), "prob_pos": [1.0] * len(texts)})

    monkeypatch.setattr(predict, "load_model", lambda uri: Model())

    def full_disk(self: pd.DataFrame, path: Path, **kw: object) -> None:
        Path(path).write_text("text,label\ngo")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError, match="No space"):
        predict.predict_file("m", src, out, show_progress=False)
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(predict, "load_model", lambda uri: Model())
    assert predict.predict_file("m", src, out, show_progress=False).rows == 2
    assert out.read_text().splitlines() == ["text,label,prob_pos", "good,pos,1.0", "bad,pos,1.0"]


# ---------------------------------------------------------------- the error is the first line (class 5)


def test_export_refit_and_predict_print_their_error_first_and_alone(tmp_path) -> None:
    """Real processes (pytest hides warnings in-process): no MLflow or Optuna warning, no colour code, one line."""
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="other", storage=storage)
    stores = ["--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "--storage", storage]
    commands = {
        "export": ["export", "--study", "nope", *stores],
        "refit": ["refit", "--study", "nope", *stores],
        "predict": ["predict", "--model", f"{tmp_path}/no-model", "--input", str(REPO / "README.md"), "--out", "x.csv"],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "benchmark", *argv],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in commands.items()
    }
    needles = {"export": "no study 'nope'", "refit": "no study 'nope'", "predict": "unknown format .md"}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, (name, err)
        line = _one_line(err, needles[name])
        assert line.startswith("layerfuse: error:") and "\x1b[" not in err, (name, err)


def test_ctrl_c_on_ui_stops_the_server_once_without_a_traceback(tmp_path, monkeypatch, capsys) -> None:
    """The server runs in its own session: Ctrl-C reaches layerfuse, which sends it one SIGINT and exits 0."""
    import threading

    from benchmark.cli import browse

    ready, got = tmp_path / "ready", tmp_path / "signals"
    server = (
        "import pathlib, signal, sys, time\n"
        "seen = []\n"
        "def stop(signum, frame):\n"
        "    seen.append(signum)\n"
        "    pathlib.Path(sys.argv[2]).write_text(str(len(seen)))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "pathlib.Path(sys.argv[1]).write_text('up')\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setattr(
        browse, "ui_command", lambda cfg, port, workers: [sys.executable, "-c", server, str(ready), str(got)]
    )

    def ctrl_c() -> None:
        deadline = time.monotonic() + 600  # `ui` first creates the store: a minute or more on a loaded machine
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal would: to layerfuse (the server is not in its group)

    # A `layerfuse ui` process starts with Python's own Ctrl-C handler; an earlier test of this session may have left
    # another one installed (a SIGINT then never reached `serve`, and the fake server slept its 60 s out).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctrl_c, daemon=True).start()
    port = _free_port()
    try:
        assert main(["ui", "--port", str(port), "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    out, err = capsys.readouterr()
    assert got.read_text() == "1" and "UI stopped" in out and "Traceback" not in err and err == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_faults_deep_inside_libraries_are_named_in_one_line(monkeypatch, capsys) -> None:
    """Own case: SQLite's "disk is full" wrapped by SQLAlchemy, and a permission error, end in one line; a bug
    (any other exception) keeps its traceback."""
    import errno
    import sqlite3

    import sqlalchemy

    from benchmark.cli import browse

    def raising(err: BaseException):
        def handler(args: object, cfg: object) -> int:
            raise err

        return handler

    full = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/cache/x.npy")
    for err, needle in ((full, "no space left for the database"), (denied, "cannot write /srv/cache/x.npy")):
        monkeypatch.setattr(browse, "_run_ls", raising(err))
        assert main(["ls", "models"]) == 2
        assert "rerun the same command" in _one_line(capsys.readouterr().err, needle)
    monkeypatch.setattr(browse, "_run_ls", raising(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        main(["ls", "models"])


def test_reports_of_studies_u_and_e_never_replace_each_other_and_stale_folders_go(tmp_path) -> None:
    """Studies ``ü`` and ``é`` get their own report folders, ``--force`` on one keeps the other, and a killed
    report's ``.NAME.tmp-PID`` folder is removed by the next report."""
    import json

    from report_fixtures import STUDIES, build_store

    from benchmark.report import write_report

    _, preset, dataset, trials = STUDIES[0]
    cfg, _ = build_store(tmp_path, [("ü", preset, dataset, trials), ("é", preset, dataset, trials)])
    reports = Path(cfg.report.out_dir)
    killed = reports / f".x.tmp-{_dead_pid()}"
    (killed / "figures").mkdir(parents=True)
    first = write_report(cfg, studies=["ü"], formats=("md",))
    assert not killed.exists()
    second = write_report(cfg, studies=["é"], formats=("md",))
    assert first.out_dir != second.out_dir
    write_report(cfg, studies=["é"], formats=("md",), force=True)
    assert json.loads((first.out_dir / "summary.json").read_text())["studies"] == ["ü"]
    assert json.loads((second.out_dir / "summary.json").read_text())["studies"] == ["é"]
    assert not [p for p in reports.iterdir() if ".tmp-" in p.name]
