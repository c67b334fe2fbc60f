"""Sharded CPU extraction: P processes x 1 thread under torchrun against 1 process x P threads (a benchmark).

1 process x 1 thread runs beside them as the reference for parallel efficiency. Each round runs the commands
in turn, each into a fresh cache, and checks that they wrote the same bytes (sha256 of every file). Reported per
candidate, best of the rounds: wall seconds of the whole command (process start, imports and model load
included), tokens per wall second, compute tokens per second (tokens over the compute seconds of the slowest
worker, from ``meta.json``), and the CPU seconds of all its processes.

    python -m benchmark.bench.shard_vs_threads --model minilm-l3 --dataset mr --n 2000 --procs 2 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmark.core.cache import FeatureCache


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hashes(cache_dir: Path) -> dict[str, str]:
    (meta,) = cache_dir.rglob("meta.json")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(meta.parent.glob("*.npy"))}


def _run(cmd: list[str], threads: int, cache_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cpu, started = _cpu_children(), time.perf_counter()
    subprocess.run([*cmd, "--set", f"paths.cache_dir={cache_dir}"], env=env, check=True, capture_output=True)
    wall, cpu = time.perf_counter() - started, _cpu_children() - cpu
    (meta_file,) = cache_dir.rglob("meta.json")
    meta = FeatureCache(meta_file.parent).meta
    slowest = max(w["seconds"] for w in meta["workers"].values())
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "tokens": meta["tokens"],
        "wall_tokens_per_s": meta["tokens"] / wall,
        "compute_tokens_per_s": meta["tokens"] / slowest,
        "workers": meta["workers"],
        "sha256": _hashes(cache_dir),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l3")
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--n", type=int, default=2000, help="texts (a fixed seeded subset of train)")
    parser.add_argument("--procs", type=int, default=2, help="P: processes of the sharded run, threads of the other")
    parser.add_argument("--chunk-size", type=int, default=250, help="texts per chunk (several chunks per process)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="reports/speed_shard.json")
    args = parser.parse_args(argv)
    extract = ["extract", "--model", args.model, "--dataset", args.dataset, "--split", "train", "--limit", str(args.n)]
    extract += ["--device", "cpu", "--no-progress", "--set", f"extract.chunk_size={args.chunk_size}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.procs}"]
    candidates = {
        f"torchrun {args.procs} processes x 1 thread": ([*torchrun, "-m", "benchmark", *extract], 1),
        f"1 process x {args.procs} threads": ([sys.executable, "-m", "benchmark", *extract], args.procs),
        "1 process x 1 thread (reference)": ([sys.executable, "-m", "benchmark", *extract], 1),
    }
    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in candidates}
    with tempfile.TemporaryDirectory(prefix="speed-shard-") as tmp:
        for r in range(args.rounds):
            for i, (name, (cmd, threads)) in enumerate(candidates.items()):
                runs[name].append(_run(cmd, threads, Path(tmp, f"r{r}-c{i}")))
                print(f"round {r}: {name}: {runs[name][-1]['wall_s']:.1f} s", file=sys.stderr)
    identical = all(len({json.dumps(runs[n][r]["sha256"]) for n in runs}) == 1 for r in range(args.rounds))
    best = {name: min(rs, key=lambda x: x["wall_s"]) for name, rs in runs.items()}
    command = "python -m benchmark.bench.shard_vs_threads " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"`{command}`: {args.model}, {args.n} {args.dataset} train texts, {best[next(iter(best))]['tokens']:,} tokens, "
        f"chunks of {args.chunk_size}; best of {args.rounds} rounds, load average before {load:.2f}; "
        f"caches byte-identical in every round: {'yes' if identical else 'NO'}",
        "",
        "| candidate | wall s | tokens / wall s | compute tokens/s | CPU s (all processes) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, b in best.items():
        lines.append(
            f"| {name} | {b['wall_s']:.1f} | {b['wall_tokens_per_s']:,.0f} | {b['compute_tokens_per_s']:,.0f} | "
            f"{b['cpu_s']:.1f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "identical": identical, "runs": runs}, indent=1))
    print("\n".join(lines))
    return 0 if identical else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
