"""The bad-input catalogue: every case ends in exit 2, one stderr line naming the bad value, and no writes.

Each case runs ``layerfuse`` in-process from an empty working folder against a shared world (datasets, a feature
cache of one tiny model, an MLflow store) and compares listings (path, size, mtime) of the world and the working
folder before and after: a refused command creates or changes nothing in the cache, the stores or the output
folder. Cases that need a broken cache get their own copy of the cache first.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmark.cli import main


@dataclass(frozen=True)
class World:
    """Paths of the shared fixtures every case may use."""

    root: Path
    data: Path  # a folder with train.csv and test.csv, two classes
    cache: Path  # features of ``model`` on ``data`` (fp32, cpu)
    stores: Path  # an existing MLflow store (mlflow.db) and room for an Optuna one
    model: Path  # a tiny BERT with 2 layers
    pickle_model: Path  # the same BERT whose only weights are a pickle the safe loader refuses
    bad: Path  # bad files: datasets, configs

    def store_args(self) -> list[str]:
        return [
            "--set",
            f"tracking.uri=sqlite:///{self.stores}/mlflow.db",
            "--set",
            f"tracking.artifact_root={self.stores}/artifacts",
        ]

    def extract(self, *extra: str, data: Path | None = None) -> list[str]:
        return [
            "extract",
            "--model",
            str(self.model),
            "--dataset",
            str(data or self.data),
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "--no-progress",
            "--set",
            f"paths.cache_dir={self.cache}",
            *extra,
        ]

    def study(self, *extra: str, data: Path | None = None, cache: Path | None = None) -> list[str]:
        return [
            "study",
            "--preset",
            "search",
            "--models",
            str(self.model),
            "--dataset",
            str(data or self.data),
            "--storage",
            f"sqlite:///{self.stores}/optuna.db",
            "--no-progress",
            "--set",
            "extract.dtype=fp32",
            "--set",
            "extract.device=cpu",
            "--set",
            f"paths.cache_dir={cache or self.cache}",
            *self.store_args(),
            *extra,
        ]

    def fit(self, *extra: str, layer: str = "1", data: Path | None = None) -> list[str]:
        return [
            "fit",
            "--dataset",
            str(data or self.data),
            "--layer",
            f"{self.model}={layer}",
            "--set",
            "extract.dtype=fp32",
            "--set",
            "extract.device=cpu",
            "--set",
            f"paths.cache_dir={self.cache}",
            "--set",
            "train.proj_dim=16",
            *extra,
        ]

    def report(self, *extra: str) -> list[str]:
        return ["report", *self.store_args(), *extra]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _pickle_model(source: Path, folder: Path) -> Path:
    """``source``'s model and tokenizer with its weights as a pickle .bin only, holding a non-tensor object."""
    import argparse

    import torch
    from transformers import AutoModel

    shutil.copytree(source, folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    state = dict(AutoModel.from_pretrained(source).state_dict())
    state["note"] = argparse.Namespace(origin="an old training script")  # weights_only=True refuses it
    torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def world(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> World:
    from conftest import write_dataset

    from benchmark.core import tracking
    from benchmark.core.config import load_config
    from benchmark.core.config_sections import TrackingConfig
    from benchmark.core.models import model_revision, resolve_model
    from extractors.run import extract_all

    root = tmp_path_factory.mktemp("bad-inputs")
    w = World(
        root=root,
        data=write_dataset(root / "data" / "toy", n_train=24, n_test=12),
        cache=root / "cache",
        stores=root / "stores",
        model=tiny_models["bert-a"],
        pickle_model=_pickle_model(tiny_models["bert-a"], root / "models" / "pickle-bert"),
        bad=root / "bad",
    )
    cfg = load_config(
        env={},
        **{
            "extract.models": (str(w.model),),
            "extract.dataset": str(w.data),
            "extract.dtype": "fp32",
            "extract.device": "cpu",
            "extract.show_progress": False,
            "paths.cache_dir": str(w.cache),
        },
    )
    extract_all(cfg)
    # As any earlier command would have: the pickle model's weights hash is remembered in the cache.
    model_revision(resolve_model(str(w.pickle_model), "."), w.cache)
    tracking.client(TrackingConfig(uri=f"sqlite:///{w.stores}/mlflow.db", artifact_root=str(w.stores / "artifacts")))
    b = w.bad
    _write(b / "ragged" / "train.csv", "text,label\ngood film,pos\nbad, really bad film,neg\nfine,pos\n")
    _write(b / "ragged" / "test.csv", "text,label\ngood,pos\nbad,neg\n")
    _write(b / "latin1" / "train.csv", "text,label\ngood,pos\nd\u00e9j\u00e0 vu,neg\n".encode("latin-1"))
    _write(b / "headeronly" / "train.csv", "text,label\n")
    _write(b / "nolabel" / "train.csv", "text,stars\nnice,5\n")
    _write(b / "emptylabel" / "train.csv", "text,label\ngood,pos\nbad,\n")
    _write(b / "oneclass" / "train.csv", "text,label\n" + "".join(f"text {i},pos\n" for i in range(8)))
    _write(
        b / "oneclass" / "test.csv", "text,label\ngood,pos\nbad,pos\n"
    )  # a test label unseen in train is refused first
    _write(b / "badjson" / "train.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": \n')
    _write(b / "notes.txt", "not a dataset\n")
    _write(b / "nosplits" / "readme.md", "no split files here\n")
    _write(b / "bad.yaml", "extract: {models: [a, b\n")
    _write(b / "list.yaml", "- extract\n- study\n")
    _write(b / "latin1.yaml", "extract:\n  dataset: caf\u00e9\n".encode("latin-1"))
    _write(b / "section.yaml", "extract: 3\n")
    _write(b / "afile", "a regular file\n")
    (b / "notamodel").mkdir()
    _bad_labels(b)
    _bad_files(b)
    _broken_stores(w)
    return w


def _split_files(folder: Path, **splits: str | bytes) -> Path:
    for name, text in splits.items():
        _write(folder / name.replace("_", "."), text)
    return folder


def _bad_labels(b: Path) -> None:
    """Class 1 of issue 29: labels that cannot be mapped to one class each across splits."""
    rows = "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(9))
    _split_files(
        b / "numvstext", train_csv="text,label\ngood,1\nbad,0\nfine,1\n", test_csv="text,label\nok,pos\nno,neg\n"
    )
    bools = '{"text": "good", "label": true}\n{"text": "bad", "label": false}\n'
    _split_files(b / "boolvsnum", train_jsonl=bools, test_csv="text,label\nok,1\nno,0\n")
    _split_files(b / "caseonly", train_csv=f"text,label\n{rows}odd,Pos\n", test_csv="text,label\nok,pos\nno,neg\n")
    third = "".join(f"t {i},{('pos', 'neg', 'neutral')[i % 3]}\n" for i in range(12))
    _split_files(b / "unseen", train_csv=f"text,label\n{rows}", test_csv=f"text,label\n{third}")
    _split_files(b / "unseenval", train_csv=f"text,label\n{rows}", dev_csv="text,label\nok,pos\nhm,mixed\n")
    _split_files(b / "objlabel", train_jsonl='{"text": "good", "label": "pos"}\n{"text": "bad", "label": {"id": 0}}\n')
    _split_files(b / "nanlabel", train_jsonl='{"text": "good", "label": 1}\n{"text": "bad", "label": NaN}\n')
    _split_files(b / "nantext", train_csv="text,label\ngood,1.0\nbad,nan\n")


def _parquet(path: Path, **columns: list[object]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _bad_files(b: Path) -> None:
    """Class 2 of issue 29: files the readers refuse by name rather than guess at."""
    import gzip

    csv = "text,label\ngood,pos\nbad,neg\n"
    _split_files(
        b / "objtext", train_jsonl='{"text": "good", "label": "pos"}\n{"text": {"body": "bad"}, "label": "neg"}\n'
    )
    _split_files(b / "numtext", train_jsonl='{"text": "good", "label": "pos"}\n{"text": 0, "label": "neg"}\n')
    _parquet(b / "intparquet" / "train.parquet", text=[7, 0], label=["pos", "neg"])
    (b / "folder" / "train.csv").mkdir(parents=True)
    _split_files(b / "gzipped", train_csv=gzip.compress(csv.encode()))
    _split_files(b / "xlsx", train_csv=b"PK\x03\x04\x14\x00\x06\x00" + bytes(64))
    _split_files(b / "packed", **{"train_csv_gz": gzip.compress(csv.encode())})
    _split_files(b / "dupheader", train_csv="text,label,text\ngood,pos,x\nbad,neg,y\n")
    _split_files(b / "unclosed", train_csv='text,label\ngood,pos\n"bad, neg\nfine,pos\n')
    _split_files(b / "zerobytes", train_csv="")
    _split_files(b / "utf16", train_csv=csv.encode("utf-16"))
    _split_files(b / "semicolon", train_csv="text;stars\ngood;5\n")
    _split_files(b / "notparquet", train_parquet=csv)
    _split_files(b / "openarray", train_json='[{"text": "good", "label": "pos"},\n {"text": "bad", "label": "neg"}\n')


def _broken_stores(w: World) -> None:
    """Store files a command must refuse before it connects: truncated, another program's, not SQLite at all."""
    import sqlite3

    stores = w.bad / "stores"
    stores.mkdir()
    whole = (w.stores / "mlflow.db").read_bytes()
    (stores / "truncated.db").write_bytes(whole[: len(whole) // 2])
    with sqlite3.connect(stores / "foreign.db") as con:
        con.execute("CREATE TABLE notes (body TEXT)")
    con.close()
    (stores / "notsqlite.db").write_text("not a database\n")
    (w.bad / "folder.csv").mkdir()
    (w.bad / "link.csv").symlink_to(w.data / "train.csv")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Case = tuple[Callable[[World], list[str]], str]

CASES: dict[str, Case] = {
    # ---- extract: names, values, config
    "unknown model alias": (lambda w: [*w.extract(), "--model", "minilm-l66"], "minilm-l66"),
    "unknown dataset": (lambda w: w.extract(data=Path("sst")), "'sst'"),
    "missing split": (lambda w: w.extract("--split", "validation"), "validation"),
    "bad pooling": (lambda w: w.extract("--pooling", "meen"), "meen"),
    "bad dtype": (lambda w: w.extract("--dtype", "fp8"), "fp8"),
    "bad device": (lambda w: w.extract("--device", "gpu"), "gpu"),
    "bad overwrite": (lambda w: w.extract("--overwrite", "sometimes"), "sometimes"),
    "limit zero": (lambda w: w.extract("--limit", "0"), "'0'"),
    "max length beyond positions": (lambda w: w.extract("--max-length", "100"), "100"),
    "unknown config key": (lambda w: w.extract("--set", "extract.pooling_mode=mean"), "extract.pooling_mode"),
    "bad config type": (lambda w: w.extract("--set", "extract.limit=abc"), "abc"),
    "chunk size zero": (lambda w: w.extract("--set", "extract.chunk_size=0"), "extract.chunk_size=0"),
    "set without equals": (lambda w: w.extract("--set", "extract.limit"), "extract.limit"),
    "missing config file": (lambda w: w.extract("-c", str(w.bad / "nope.yaml")), "nope.yaml"),
    "bad yaml": (lambda w: w.extract("-c", str(w.bad / "bad.yaml")), "bad.yaml"),
    "yaml not a mapping": (lambda w: w.extract("-c", str(w.bad / "list.yaml")), "list.yaml"),
    "yaml section not a mapping": (lambda w: w.extract("-c", str(w.bad / "section.yaml")), "'extract'"),
    "yaml not utf-8": (lambda w: w.extract("-c", str(w.bad / "latin1.yaml")), "latin1.yaml"),
    "duplicate model": (lambda w: [*w.extract(), "--model", f"{w.model},{w.model}"], "more than once"),
    "cache dir under a file": (lambda w: w.extract("--set", f"paths.cache_dir={w.bad}/afile/cache"), "afile"),
    "never with no cache": (lambda w: w.extract("--overwrite", "never", "--limit", "5"), "extract.overwrite=never"),
    "model folder without config": (lambda w: [*w.extract(), "--model", str(w.bad / "notamodel")], "notamodel"),
    "pickle-only weights": (lambda w: [*w.extract(), "--model", str(w.pickle_model)], "pickle-bert"),
    "unsafe trust_remote_code type": (lambda w: w.extract("--set", "extract.trust_remote_code=maybe"), "maybe"),
    # ---- data files
    "header-only csv": (lambda w: w.extract(data=w.bad / "headeronly"), "is empty"),
    "missing column": (lambda w: w.extract(data=w.bad / "nolabel"), "'label'"),
    "renamed text column": (lambda w: w.extract("--set", "data.text_column=body"), "'body'"),
    "ragged csv row": (lambda w: w.extract(data=w.bad / "ragged"), "line 3"),
    "csv not utf-8": (lambda w: w.extract(data=w.bad / "latin1"), "0xe9"),
    "unknown encoding": (lambda w: w.extract("--set", "data.encoding=utf-9"), "utf-9"),
    "empty label": (lambda w: w.extract(data=w.bad / "emptylabel"), "line 3"),
    "bad json line": (lambda w: w.extract(data=w.bad / "badjson"), "line 2"),
    "dataset file of unknown type": (lambda w: w.extract(data=w.bad / "notes.txt"), "notes.txt"),
    "folder without split files": (lambda w: w.extract(data=w.bad / "nosplits"), "nosplits"),
    "val fraction out of range": (lambda w: w.extract("--set", "data.val_fraction=1.5"), "1.5"),
    # ---- labels: one identity across files, types and spellings (issue 29, class 1)
    "numeric train labels, text test labels": (lambda w: w.fit(data=w.bad / "numvstext"), "label types differ"),
    "json true/false against 1/0": (lambda w: w.extract(data=w.bad / "boolvsnum"), "has true/false labels"),
    "labels differing only by case": (lambda w: w.extract(data=w.bad / "caseonly"), "'pos' (train.csv line"),
    "a third of test labels unseen": (lambda w: w.fit(data=w.bad / "unseen"), "4 of 12 rows (33%)"),
    "validation label unseen": (lambda w: w.extract(data=w.bad / "unseenval"), "dev.csv: 1 of 2 rows"),
    "label that is an object": (
        lambda w: w.extract(data=w.bad / "objlabel"),
        "line 2: column 'label' has a label that is dict",
    ),
    "NaN label in json": (
        lambda w: w.extract(data=w.bad / "nanlabel"),
        "line 2: column 'label' has a missing label (NaN)",
    ),
    "nan label in csv": (
        lambda w: w.extract(data=w.bad / "nantext"),
        "line 3: column 'label' has a missing label ('nan'",
    ),
    # ---- readers that never guess (issue 29, class 2)
    "json text that is an object": (
        lambda w: w.extract(data=w.bad / "objtext"),
        "line 2: 'text' is {'body': 'bad'} (dict)",
    ),
    "json text that is a number": (
        lambda w: w.extract(data=w.bad / "numtext"),
        "line 2: 'text' is 0 (int), not a text",
    ),
    "parquet text column of numbers": (lambda w: w.extract(data=w.bad / "intparquet"), "row 1: 'text' is 7 (int)"),
    "split file that is a folder": (lambda w: w.extract(data=w.bad / "folder"), "train.csv is a folder"),
    "gzip named .csv": (lambda w: w.extract(data=w.bad / "gzipped"), "is a gzip-compressed file"),
    "xlsx named .csv": (lambda w: w.extract(data=w.bad / "xlsx"), "is a zip archive (an Excel .xlsx"),
    "only compressed split files": (lambda w: w.extract(data=w.bad / "packed"), "train.csv.gz are compressed"),
    "duplicated header column": (lambda w: w.extract(data=w.bad / "dupheader"), "'text' appears 2 times"),
    "unclosed quote": (lambda w: w.extract(data=w.bad / "unclosed"), "line 3: not valid CSV"),
    "zero-byte csv": (lambda w: w.extract(data=w.bad / "zerobytes"), "train.csv is empty: expected a header"),
    "utf-16 csv": (lambda w: w.extract(data=w.bad / "utf16"), "data.encoding=utf-16"),
    "semicolon csv without the label column": (lambda w: w.extract(data=w.bad / "semicolon"), "semicolon-separated"),
    "csv named .parquet": (lambda w: w.extract(data=w.bad / "notparquet"), "not a readable Parquet file"),
    "json array never closed": (lambda w: w.extract(data=w.bad / "openarray"), "not closed with ']'"),
    # ---- study
    "unknown preset": (lambda w: w.study("--preset", "serch"), "serch"),
    "too few models": (lambda w: w.study("--preset", "multi-model"), "multi-model"),
    "trials zero": (lambda w: w.study("--trials", "0"), "'0'"),
    "workers negative": (lambda w: w.study("--workers", "-1"), "'-1'"),
    "bad pruner": (lambda w: w.study("--set", "study.pruner=mediam"), "mediam"),
    "unknown fusion in study": (lambda w: w.study("--set", "study.fusions=concat,sumx"), "sumx"),
    "single-class training data": (lambda w: w.study(data=w.bad / "oneclass"), "single class"),
    "folds beyond the smallest class": (lambda w: w.study("--set", "data.cv_folds=13"), "data.cv_small_classes=spread"),
    "unknown small-class rule": (lambda w: w.study("--set", "data.cv_small_classes=drop"), "'drop'"),
    "unknown storage scheme": (lambda w: w.study("--storage", "foo://bar/x.db"), "foo://bar/x.db"),
    "storage under a file": (lambda w: w.study("--storage", f"sqlite:///{w.bad}/afile/o.db"), "afile"),
    "storage server down": (
        lambda w: w.study("--storage", f"postgresql://u:pw@127.0.0.1:{_closed_port()}/db"),
        "postgresql://u:***@127.0.0.1:",
    ),
    "tracking uri scheme": (lambda w: w.study("--set", "tracking.uri=foo://bar"), "foo://bar"),
    "tracking uri under a file": (
        lambda w: w.study("--set", f"tracking.uri=sqlite:///{w.bad}/afile/m.db"),
        "afile",
    ),
    "artifact root under a file": (
        lambda w: w.study("--set", f"tracking.artifact_root={w.bad}/afile/art"),
        "tracking.artifact_root",
    ),
    "missing cache": (lambda w: w.study("--set", "extract.limit=20"), "run first: layerfuse extract"),
    # ---- fit
    "repeated layer": (lambda w: [*w.fit(), "--layer", f"{w.model}=2"], "repeats model"),
    "layer out of range": (lambda w: w.fit(layer="7"), "layer 7"),
    "bad aggregation": (lambda w: w.fit(layer="median:last2"), "median"),
    "layer spec without model": (lambda w: [*w.fit(), "--layer", "3"], "'3'"),
    "unknown fusion": (lambda w: w.fit("--fusion", "concatt"), "concatt"),
    "quaternion width": (lambda w: w.fit("--fusion", "quaternion", "--set", "train.proj_dim=6"), "d=6"),
    "single-class fit": (lambda w: w.fit(data=w.bad / "oneclass"), "single class"),
    # ---- report
    "report unknown study": (lambda w: w.report("--study", "no-such-study"), "no-such-study"),
    "report into a file": (lambda w: w.report("--study", "x", "--out", str(w.bad / "afile")), "afile"),
    "report under a file": (lambda w: w.report("--study", "x", "--out", str(w.bad / "afile" / "sub")), "afile"),
    "report bad format": (lambda w: w.report("--study", "x", "--format", "pdf"), "pdf"),
    "report on no store": (
        lambda w: ["report", "--study", "x", "--set", f"tracking.uri=sqlite:///{w.root}/none/mlflow.db"],
        "none/mlflow.db",
    ),
    # ---- ui, ls, pipeline, argv
    "ui tracking uri scheme": (lambda w: ["ui", "--set", "tracking.uri=foo://bar"], "foo://bar"),
    "ui port out of range": (lambda w: ["ui", "--port", "70000", *w.store_args()], "70000"),
    "ls unknown registry": (lambda w: ["ls", "bogus"], "'bogus'"),
    "unknown command": (lambda w: ["frobnicate"], "'frobnicate'"),
    "reproduce duplicate dataset": (lambda w: ["reproduce", "--datasets", "mr,mr"], "'mr'"),
    "reproduce unknown preset": (
        lambda w: ["reproduce", "--datasets", "mr", "--set", "pipeline.presets=layer-swep"],
        "layer-swep",
    ),
    # ---- faults: stores, splits and outputs a command cannot use (issue 29, class 3 and 4)
    "truncated mlflow.db": (
        lambda w: w.study("--set", f"tracking.uri=sqlite:///{w.bad}/stores/truncated.db"),
        "truncated.db is not a usable store: it is truncated",
    ),
    "foreign optuna.db": (
        lambda w: w.study("--storage", f"sqlite:///{w.bad}/stores/foreign.db"),
        "another program's database (tables notes; no 'studies')",
    ),
    "ui on a foreign database": (
        lambda w: ["ui", "--set", f"tracking.uri=sqlite:///{w.bad}/stores/foreign.db"],
        "no 'experiments'",
    ),
    "report on a file that is not SQLite": (
        lambda w: ["report", "--study", "x", "--set", f"tracking.uri=sqlite:///{w.bad}/stores/notsqlite.db"],
        "it is not a SQLite database; move it aside",
    ),
    "refit on a missing storage": (
        lambda w: ["refit", "--study", "x", "--storage", f"sqlite:///{w.root}/none/optuna.db", *w.store_args()],
        "no Optuna storage at",
    ),
    "empty validation split in fit": (
        lambda w: w.fit("--set", "data.val_fraction=0.001"),
        "data.val_fraction=0.001 holds out no validation row: the smallest class",
    ),
    "empty validation split in a study": (
        lambda w: w.study("--set", "data.val_fraction=0.001"),
        "use data.val_fraction=0.0417 or more",
    ),
    "predict out is the input": (
        lambda w: _predict(w, w.data / "train.csv"),
        "is the input file",
    ),
    "predict out is the input by another spelling": (
        lambda w: _predict(w, w.data / ".." / w.data.name / "train.csv"),
        "would overwrite the texts being classified",
    ),
    "predict out is a link to the input": (lambda w: _predict(w, w.bad / "link.csv"), "is the input file"),
    "predict out is a folder": (lambda w: _predict(w, w.bad / "folder.csv"), "is a folder"),
}


def _predict(w: World, out: Path) -> list[str]:
    return ["predict", "--model", "models:/m@champion", "--input", str(w.data / "train.csv"), "--out", str(out)]


# Cases whose cache is broken first (in a copy): what is broken, and the message naming it.
BROKEN_CACHES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated layer file": (
        lambda d: (d / "layer_02.npy").write_bytes((d / "layer_02.npy").read_bytes()[:200]),
        "layer_02.npy is truncated: 200 of ",
    ),
    "garbage meta.json": (lambda d: (d / "meta.json").write_text("{not json"), "meta.json is corrupt"),
    "deleted labels": (lambda d: (d / "labels.npy").unlink(), "labels.npy is missing"),
    "label_names null": (lambda d: _edit_meta(d, label_names=None), "'label_names' is None"),
}


def _edit_meta(folder: Path, **changes: object) -> None:
    import json

    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


def _listing(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            st = p.stat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def _assert_refused(argv: list[str], needle: str, watched: list[Path], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``: exit 2, one stderr line holding ``needle``, no traceback, no file changed; return the line."""
    before = _listing(*watched)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit from inside main
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert _listing(*watched) == before, "a refused command changed files"
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case: str, world: World, tmp_path: Path, monkeypatch, capsys) -> None:
    make_argv, needle = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default paths (mlruns/, .cache/, reports/) land here: they must not appear
    monkeypatch.setattr("os.execv", _no_exec)
    monkeypatch.setattr("os.execve", _no_exec)
    _assert_refused(make_argv(world), needle, [world.root, work], capsys)


@pytest.mark.parametrize("case", sorted(BROKEN_CACHES))
@pytest.mark.parametrize("command", ["study", "fit"])
def test_broken_cache_names_the_reason(
    case: str, command: str, world: World, tmp_path: Path, monkeypatch, capsys
) -> None:
    break_it, needle = BROKEN_CACHES[case]
    cache = tmp_path / "cache"
    shutil.copytree(world.cache, cache)
    train = next(p.parent for p in cache.rglob("meta.json") if p.parent.parent.name == "train")
    break_it(train)
    monkeypatch.chdir(tmp_path)
    argv = world.study(cache=cache) if command == "study" else [*world.fit(), "--set", f"paths.cache_dir={cache}"]
    line = _assert_refused(argv, needle, [world.root, cache], capsys)
    assert "run first: layerfuse extract" in line  # beside the reason: the command that repairs it


def _no_exec(*args: object) -> None:
    raise AssertionError(f"the command would have started {args}")


def test_catalogue_size() -> None:
    """README's "Errors" paragraph quotes this count."""
    assert len(CASES) + len(BROKEN_CACHES) * 2 >= 40
