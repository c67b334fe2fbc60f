"""Sharded extraction: torchrun ranks (gloo on CPU) and ``--shard I/N`` jobs write the bytes one process writes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, write_dataset
from test_extract import make_cfg

from benchmark.cli import main
from benchmark.core.cache import FeatureCache, is_complete
from benchmark.core.cache_writer import CacheWriter, partial_dir
from benchmark.core.config import load_config
from benchmark.core.config_sections import ConfigError, parse_shard
from benchmark.core.errors import UserError
from benchmark.core.locks import CacheLock
from extractors import hf as hf_module
from extractors.run import extract_all
from extractors.shard import Shard

N_TEXTS, CHUNK = 300, 20  # 15 chunks: rank 0 computes 7 (0, 3, 4, 7, ...), rank 1 computes 8 (1, 2, 5, 6, ...)
SETTINGS = {"extract.chunk_size": CHUNK, "extract.token_budget": 64}

# Rank 1 is SIGKILLed right after writing its first chunk; torchrun then stops rank 0 wherever it is.
KILL_RANK_1 = """
import os, signal, sys
from benchmark.core.cache_writer import CacheWriter
real = CacheWriter.write_chunk
def write_then_die(self, *args, **kwargs):
    real(self, *args, **kwargs)
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
CacheWriter.write_chunk = write_then_die
from benchmark.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def texts_300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "toy300", n_train=N_TEXTS, n_test=4)


def sha256_files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.npy"))}


def extract_args(model: Path, data: Path, cache: Path) -> list[str]:
    args = ["extract", "--model", str(model), "--dataset", str(data), "--split", "train", "--dtype", "fp32"]
    args += ["--device", "cpu", "--no-progress", "--set", f"paths.cache_dir={cache}"]
    return args + [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]


def torchrun(nproc: int, script: list[str], args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    import torch

    # The ranks compute on as many threads as the single-process reference did: fp32 GEMMs block their sums by the
    # thread count, so on some CPUs one thread rounds a layer differently from two, which no sharding causes.
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["--log-dir", str(tmp_path / "torchrun-logs"), *script, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_process(tiny_models, texts_300, tmp_path_factory) -> Path:
    """The single-process cache every sharded run must equal byte for byte."""
    cache = tmp_path_factory.mktemp("one-process")
    (summary,) = extract_all(make_cfg(tiny_models["llama-left"], texts_300, cache, **SETTINGS))
    return summary.path


def test_torchrun_two_cpu_ranks_write_the_single_process_bytes(tiny_models, texts_300, one_process, tmp_path) -> None:
    cache = tmp_path / "cache"
    done = torchrun(2, ["-m", "benchmark"], extract_args(tiny_models["llama-left"], texts_300, cache), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    final = cache / one_process.relative_to(one_process.parents[4])
    assert sha256_files(final) == sha256_files(one_process)
    assert len(sha256_files(final)) == 4 + 1  # L+1 = 4 layers and the labels
    meta = FeatureCache(final).meta
    workers = meta["workers"]
    assert sorted(w.split(" on ")[0] for w in workers) == ["rank 0/2", "rank 1/2"]
    assert sorted(w["chunks"] for w in workers.values()) == [7, 8]
    assert sum(w["tokens"] for w in workers.values()) == meta["tokens"] == FeatureCache(one_process).meta["tokens"]
    assert all(w["tokens_per_s"] > 0 for w in workers.values())
    assert not partial_dir(final).exists()


def test_a_killed_rank_loses_only_its_chunk_and_one_process_completes(
    tiny_models, texts_300, one_process, tmp_path, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1)
    model = tiny_models["llama-left"]
    killed = torchrun(2, [str(script)], extract_args(model, texts_300, cache), tmp_path)
    assert killed.returncode != 0
    final = cache / one_process.relative_to(one_process.parents[4])
    assert not is_complete(final)
    # A chunk is written when its feature file is (json and index come first), as CacheWriter.chunk_done reads it:
    # torchrun may stop rank 0 between a chunk's json and its features.
    chunks = sorted(int(p.stem.split("_")[1]) for p in partial_dir(final).glob("chunk_*[0-9].npy"))
    assert 1 in chunks and 2 not in chunks  # rank 1 wrote chunk 1, then died before chunk 2
    assert all(Shard(0, 2).owns(i) for i in chunks if i != 1)  # the rest are rank 0's

    encoded: list[int] = []
    real = hf_module.HFHiddenStateExtractor.encode_ids
    monkeypatch.setattr(
        hf_module.HFHiddenStateExtractor,
        "encode_ids",
        lambda self, ids, progress=None: (encoded.append(len(ids)), real(self, ids, progress))[1],
    )
    (summary,) = extract_all(make_cfg(model, texts_300, cache, **SETTINGS))  # N = 1
    assert summary.complete and summary.path == final
    assert len(encoded) == N_TEXTS // CHUNK - len(chunks)  # only the chunks the killed run had not written
    assert sha256_files(final) == sha256_files(one_process)


def test_shards_in_turn_the_last_completes_the_cache(tiny_models, texts_300, one_process, tmp_path, capsys) -> None:
    cache = tmp_path / "cache"
    model = tiny_models["llama-left"]
    assert main([*extract_args(model, texts_300, cache), "--shard", "0/2"]) == 0
    assert "1 wait for other shards" in capsys.readouterr().out
    final = cache / one_process.relative_to(one_process.parents[4])
    assert not is_complete(final)
    written = sorted(int(p.stem.split("_")[1]) for p in partial_dir(final).glob("chunk_*.json"))
    assert written == [0, 3, 4, 7, 8, 11, 12]

    (summary,) = extract_all(make_cfg(model, texts_300, cache, **SETTINGS, **{"extract.shard": "1/2"}))
    assert summary.complete and summary.path == final
    assert sha256_files(final) == sha256_files(one_process)
    workers = FeatureCache(final).meta["workers"]
    assert {w.split(" on ")[0]: v["chunks"] for w, v in workers.items()} == {"shard 0/2": 7, "shard 1/2": 8}


def test_a_shard_with_another_chunk_size_continues_the_recorded_chunking(
    tiny_models, texts_300, tmp_path, one_process
) -> None:
    """A shard given another extract.chunk_size keeps the other shard's chunks; the cache is byte-identical."""
    model = tiny_models["llama-left"]
    extract_all(make_cfg(model, texts_300, tmp_path, **SETTINGS, **{"extract.shard": "0/2"}))
    other = make_cfg(model, texts_300, tmp_path, **{**SETTINGS, "extract.chunk_size": 30, "extract.shard": "1/2"})
    (summary,) = extract_all(other)
    assert summary.complete and sha256_files(summary.path) == sha256_files(one_process)
    workers = FeatureCache(summary.path).meta["workers"]  # the first shard's chunks were kept, not recomputed
    assert {w.split(" on ")[0]: v["chunks"] for w, v in workers.items()} == {"shard 0/2": 7, "shard 1/2": 8}


def test_shard_locks_are_shared_between_shards_and_exclude_a_lone_writer(tmp_path) -> None:
    shard_a, shard_b, lone = (CacheLock(tmp_path / "key.lock") for _ in range(3))
    assert shard_a.try_acquire(exclusive=False) and shard_b.try_acquire(exclusive=False)
    with pytest.raises(UserError, match="another process is writing"):
        lone.acquire_exclusive()
    assert not shard_a.try_acquire(exclusive=True)  # finishing waits for the last shard
    shard_b.release()
    assert shard_a.try_acquire(exclusive=True)
    shard_a.release()
    lone.acquire_exclusive()
    lone.release()


def test_chunks_go_to_workers_in_snake_order() -> None:
    assert [i for i in range(8) if Shard(0, 2).owns(i)] == [0, 3, 4, 7]
    assert [[i for i in range(7) if Shard(w, 3).owns(i)] for w in range(3)] == [[0, 5, 6], [1, 4], [2, 3]]
    assert all(Shard().owns(i) for i in range(5))


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_names_the_form(text: str) -> None:
    with pytest.raises(ConfigError, match="use I/N with 0 <= I < N"):
        parse_shard(text)


def test_shard_refuses_overwrite_always(capsys) -> None:
    with pytest.raises(ConfigError, match="delete the chunks of the others"):
        load_config(env={}, **{"extract.shard": "0/2", "extract.overwrite": "always"})
    assert main(["extract", "--shard", "0/2", "--overwrite", "always", "--no-progress"]) == 2
    assert "delete the chunks of the others" in capsys.readouterr().err


def test_shards_write_only_their_own_chunks(tmp_path) -> None:
    import numpy as np

    from benchmark.core.cache import FeatureKey

    key = FeatureKey("m", "r", "d", "0" * 64, "train", "mean", 8, "fp32")
    final = tmp_path / key.relpath()
    writers = [CacheWriter(final, key, n=10, chunk_size=3, shared=True).open() for _ in range(2)]
    for index, w in enumerate(writers):
        for i in (i for i in range(w.num_chunks) if Shard(index, 2).owns(i)):
            rows = np.arange(i * 3, min(10, i * 3 + 3))
            w.write_chunk(i, rows, np.zeros((2, len(rows), 4)), {"tokens": 1.0}, worker=f"shard {index}/2")
    assert not writers[0].claim_finish()  # shard 1 still holds the lock
    writers[0].close()
    assert writers[1].claim_finish()
    assert json.loads((partial_dir(final) / "chunk_00001.json").read_text())["worker"] == "shard 1/2"
    assert json.loads((partial_dir(final) / "chunk_00003.json").read_text())["worker"] == "shard 0/2"
    per_worker = {"chunks": 2, "tokens": 2.0}
    assert writers[1].worker_stats() == {"shard 0/2": per_worker, "shard 1/2": per_worker}
    writers[1].close()


def test_a_shard_never_starts_over_the_chunks_of_another_device(tiny_models, tiny_data, tmp_path, monkeypatch) -> None:
    import torch

    cfg = make_cfg(tiny_models["bert-a"], tiny_data, tmp_path, **{"extract.shard": "0/2"})
    extract_all(cfg)  # shard 0's chunks; shard 1's are missing
    (state_file,) = tmp_path.rglob("partial.json")
    state = json.loads(state_file.read_text())
    state["batching"]["device"] = "cuda"  # as if the job array had run on GPU nodes
    state_file.write_text(json.dumps(state))
    chunks = sorted(p.name for p in state_file.parent.iterdir())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    other = make_cfg(tiny_models["bert-a"], tiny_data, tmp_path, **{"extract.shard": "1/2"})
    with pytest.raises(UserError, match="was made on cuda, which this shard cannot use"):
        extract_all(other)
    assert sorted(p.name for p in state_file.parent.iterdir()) == chunks


def test_shard_under_torchrun_is_refused(monkeypatch) -> None:
    from extractors.shard import open_shard

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="torchrun already splits the work by rank; drop --shard"):
        open_shard(load_config(env={}, **{"extract.shard": "0/2"}))
