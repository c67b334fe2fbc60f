"""Helpers of the fault tests (tests/**/test_*_faults.py): one-line errors, read-only folders, dead pids, runs."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
"""This checkout, put on PYTHONPATH of the commands the tests start."""


def one_line(err: str, needle: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    return lines[0]


@contextmanager
def read_only(path: Path):
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


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def runs_of_kind(uri: str, kind: str) -> list:
    from mlflow.tracking import MlflowClient

    from benchmark.core import tracking

    mlc = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in mlc.search_experiments()]
    return list(mlc.search_runs(ids, f"tags.`{tracking.TAG_KIND}` = '{kind}'"))
