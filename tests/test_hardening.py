"""No lost work under concurrent commands, and the inputs we accept rather than refuse (with what they mean).

Two real processes on one cache key, a real socket on the UI's port, the kill window of a trial's MLflow run,
and the data the readers accept: a UTF-8 byte-order mark, another encoding when named, one class per numeric
label value, empty texts (kept, with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
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


def test_overwrite_always_refuses_while_another_process_extracts(tiny_models, tmp_path, capsys) -> None:
    """Item 1: the second command deletes nothing and is refused; the first one finishes."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=160, n_test=4)  # 20 chunks of 8, each written with fsync
    cache = tmp_path / "cache"
    argv = _extract_argv(tiny_models["bert-a"], data, cache)
    first = subprocess.Popen(
        [sys.executable, "-m", "benchmark", *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(cache.rglob("chunk_00000.npy")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
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
    from studies.objective import StudyRuns, create_trial_run
    from studies.orphans import close_orphan_runs
    from studies.parent_run import close_stale_run
    from studies.storage import make_storage

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
