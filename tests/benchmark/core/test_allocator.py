"""glibc's malloc keeps freed memory in every layerfuse process: large tensors stop page-faulting on each step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fault_helpers import REPO

from benchmark.core import allocator

# A training step's memory traffic without its arithmetic: 64 MB tensors (above glibc's largest mmap threshold,
# 32 MB) made and freed, forward and backward, 12 times after 10 steps of warm-up (the heap grows to its working
# size); the minor page faults of those steps.
PROBE = """
import json, os, resource, sys
from benchmark.core.allocator import keep_freed_memory
told = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
x = torch.randn(16 * 2**20, requires_grad=True)
def step():
    (x * 2).relu().sum().backward()
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
child = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
print(json.dumps({"told": told, "faults": faults, "env": child}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_stops_the_page_faults_of_large_tensors() -> None:
    kept, default = _probe("keep"), _probe("default")
    assert kept["told"] and not default["told"]
    # glibc's default: each step maps its 64 MB tensors afresh (~16k faults each); kept, they are reused.
    assert default["faults"] > 12 * 16_000 and kept["faults"] * 4 < default["faults"], (kept, default)
    # The processes it starts (study workers, torchrun ranks) read the same settings from their environment.
    assert kept["env"] == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)} and default["env"] == {}
    # A user's own setting of glibc's malloc is left alone: nothing changes, the faults stay.
    chosen = _probe("keep", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576")
    assert not chosen["told"] and chosen["env"] == {} and chosen["faults"] > 2 * kept["faults"]


def test_the_users_allocator_choice_is_recognised(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD")]:
        monkeypatch.delenv(key)
    assert allocator._user_chose() is None
    for key, value in allocator.KEEP.items():  # inherited from the layerfuse process that started this one
        monkeypatch.setenv(key, str(value))
    assert allocator._user_chose() is None
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libgomp.so.1")  # preloads something other than an allocator
    assert allocator._user_chose() is None
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator._user_chose() == "LD_PRELOAD"
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # the user's own value of one of ours
    assert allocator._user_chose() == "MALLOC_TRIM_THRESHOLD_"
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(2**31 - 1))
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator._user_chose() == "MALLOC_ARENA_MAX"


def test_every_layerfuse_command_keeps_freed_memory() -> None:
    code = (
        "import os; from benchmark.cli import main; main(['ls', 'fusions']); print(os.environ.get('MALLOC_MMAP_MAX_'))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[-1] == ("0" if sys.platform.startswith("linux") else "None")
