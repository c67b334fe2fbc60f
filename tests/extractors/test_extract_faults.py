"""`layerfuse extract` under faults: a second writer, a full disk, a read-only cache, SIGTERM, a kill, a pickle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fault_helpers import REPO, dead_pid, one_line, read_only, runs_of_kind

from benchmark.cli import main
from benchmark.core.cache import is_complete


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


def _clean_cache(tiny_models, data: Path, root: Path) -> dict[str, bytes]:
    """Layer and label files of one uninterrupted extraction (chunks of 8), to compare resumed ones against."""
    cache = root / "clean"
    assert main(_extract_argv(tiny_models["bert-a"], data, cache)) == 0
    return _feature_bytes(cache)


def _feature_bytes(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in cache.rglob("*.npy") if ".partial" not in str(p)}


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
        line = one_line(capsys.readouterr().err, "no space left on the device of")
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
    one_line(capsys.readouterr().err, "while writing chunk 1 (1 of 5 chunks done, kept)")
    (partial,) = cache.rglob("*.partial")
    assert not list(partial.glob("*.tmp*")) and (partial / "chunk_00000.npy").is_file()


def test_a_complete_read_only_cache_is_read_and_a_missing_key_refused(tiny_models, tmp_path, capsys) -> None:
    """Immutable (root) or read-only cache: extract's cache hits pass, a key to write is one line, nothing changes."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=16, n_test=4)
    cache = tmp_path / "cache"
    argv = _extract_argv(tiny_models["bert-a"], data, cache)
    assert main(argv) == 0
    before = _tree(cache)
    with read_only(cache):
        assert main(argv) == 0  # all cache hits: nothing to write
        capsys.readouterr()
        assert main([*argv, "--limit", "5"]) == 2
        one_line(capsys.readouterr().err, "cannot write")
    assert _tree(cache) == before


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
    (run,) = runs_of_kind(uri, "extract")
    assert run.info.status == "KILLED" and "KeyboardInterrupt: signal SIGTERM" in run.data.tags["layerfuse.error"]
    assert main(argv) == 0 and is_complete(next(cache.rglob("meta.json")).parent)


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
    (done,) = runs_of_kind(uri, "extract")
    me = tracking.owner_tags()
    owners = {
        "killed": {**me, tracking.TAG_PID: str(dead_pid())},
        "reused pid": {**me, tracking.TAG_PID_START: "12345.00"},  # this pid, but another process's start time
        "alive": me,
        "other host": {**me, tracking.TAG_HOST: "elsewhere", tracking.TAG_PID: str(dead_pid())},
    }
    ids = {
        name: mlc.create_run(done.info.experiment_id, tags={tracking.TAG_KIND: "extract", **tags}).info.run_id
        for name, tags in owners.items()
    }
    assert main(argv) == 0  # every key is complete: no run of its own, still the orphans are closed
    status = {name: mlc.get_run(i).info.status for name, i in ids.items()}
    assert status == {"killed": "KILLED", "reused pid": "KILLED", "alive": "RUNNING", "other host": "RUNNING"}
    assert "died without closing it" in mlc.get_run(ids["killed"]).data.tags[tracking.TAG_ERROR]


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
