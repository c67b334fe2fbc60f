"""Speed of an exported model vs. extracting every layer: ``python -m benchmark.bench.export_vs_extract``.

For one configuration (default SmolLM2-135M at layer 14 under a concat head) it builds an export bundle whose
member is cut after that layer, then classifies the same MR test texts two ways, interleaved, best of
``--repeats``: (a) the bundle's ``predict`` (tokenize, forward through the kept blocks, pool, head) and (b) the
path without export: the full model's extraction of all L+1 layers (``HFHiddenStateExtractor.encode_ids``,
as ``layerfuse extract`` runs it), then the same layer, scaling and head. The head is seeded, not trained:
speed does not depend on its weights, and both paths apply the very same one (their labels are compared).
It also reports the cut member's size on disk against the full weights (as shipped, and stored as the cut is).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmark.core.config import load_config
from benchmark.core.hardware import resolve_dtype
from benchmark.core.keys import load_text_split
from benchmark.core.models import ModelSpec, resolve_model, weight_files
from benchmark.serve.model_export import save_cut_model
from benchmark.serve.pyfunc_model import BUNDLE_FILE, FORMAT_VERSION, NET_FILE, SCALERS_FILE, Bundle
from extractors.hf import HFHiddenStateExtractor, cast_linear_weights
from extractors.truncate import param_count, weights_dtype
from lightning_modules.components.net import FusionNet
from lightning_modules.features import standardise

Labels = np.ndarray  # (n,) predicted label ids
Times = dict[str, list[float]]  # path -> seconds of each run


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


PATHS = ("exported predict", "extract all layers + head")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.bench.export_vs_extract", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=14)
    parser.add_argument("--dataset", default="mr")
    parser.add_argument("--rows", type=int, default=400, help="MR test texts (a seeded subset)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def _write_bundle(spec: ModelSpec, layer: int, dtype: str, root: Path) -> tuple[Path, float]:
    """A bundle in ``root`` of ``spec`` cut after ``layer`` under a seeded concat head; (member folder, export s)."""
    from safetensors.torch import save_file

    pooling, max_length = spec.default_pooling, spec.max_length
    folder = root / "members" / "0"
    started = time.perf_counter()
    cut = save_cut_model(spec, layer, dtype, pooling, max_length, folder)
    export_s = time.perf_counter() - started
    torch.manual_seed(0)
    net = FusionNet([spec.hidden_size], 2, "concat", hidden_dims=(256,), seed=0).eval()
    save_file(net.state_dict(), str(root / NET_FILE))
    np.savez(root / SCALERS_FILE)
    member = {
        "alias": spec.alias, "kind": spec.kind, "layers": [layer], "agg": None, "num_layers": spec.num_layers,
        "hidden_size": spec.hidden_size, "pooling": pooling, "max_length": max_length, "dtype": dtype,
        "prefix": spec.prefix, "cut_at": layer, "folder": "members/0", "cut": cut,
    }  # fmt: skip
    meta = {"format": FORMAT_VERSION, "members": [member], "label_names": ["0", "1"]}
    meta["net"] = {"input_dims": [spec.hidden_size], "num_classes": 2, "fusion": "concat", "hidden_dims": [256]}
    (root / BUNDLE_FILE).write_text(json.dumps(meta))
    return folder, export_s


def _paths(bundle: Bundle, full: HFHiddenStateExtractor, texts: list[str], layer: int) -> list[Callable[[], Labels]]:
    """The two ways to the labels of ``texts``, in ``PATHS`` order."""

    def exported() -> Labels:
        return np.asarray(bundle.probabilities(texts).argmax(1))

    @torch.inference_mode()
    def extract_all_layers() -> Labels:
        ids = full.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        states, _ = full.encode_ids([ids[i] for i in order])  # (L+1, n, H) float16
        chosen = np.empty_like(states[layer])
        chosen[order] = states[layer]
        logits = bundle.net([torch.from_numpy(standardise(chosen, None, None))])
        return np.asarray(torch.softmax(logits.double(), -1).numpy().argmax(1))

    return [exported, extract_all_layers]


def _interleaved(fns: list[Callable[[], Labels]], repeats: int) -> tuple[Times, Times, dict[str, Labels]]:
    """Wall and CPU seconds of every run of each path (``PATHS``), taking turns, and each path's labels."""
    times: Times = {name: [] for name in PATHS}
    cpu: Times = {name: [] for name in PATHS}
    labels = {}
    for _ in range(repeats):
        for name, fn in zip(PATHS, fns, strict=True):
            started, cpu_started = time.perf_counter(), time.process_time()
            labels[name] = fn()
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)  # less sensitive to other jobs on the cores
    return times, cpu, labels


def _print_speed(args: argparse.Namespace, dtype: str, n: int, times: Times, cpu: Times, agree: float) -> None:
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.model}@{args.layer}, {n} {args.dataset} test texts, dtype {dtype}, torch threads "
          f"{torch.get_num_threads()}, best of {args.repeats} (interleaved)")  # fmt: skip
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds:7.2f} s  {1000 * seconds / n:6.1f} ms/text  all: "
              + ", ".join(f"{s:.2f}" for s in times[name]))  # fmt: skip
    best_cpu = {k: min(v) for k, v in cpu.items()}
    for name, seconds in best_cpu.items():
        print(f"  {name:28s} {seconds:7.2f} CPU-s")
    print(
        f"  speed-up {best['extract all layers + head'] / best['exported predict']:.2f}x wall, "
        f"{best_cpu['extract all layers + head'] / best_cpu['exported predict']:.2f}x CPU; labels agree {agree:.2%}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one table."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(**{"extract.dataset": args.dataset, "extract.limit": args.rows})
    spec = resolve_model(args.model, cfg.paths.models_dir)
    dtype = resolve_dtype(args.dtype, "cpu")
    texts = load_text_split(cfg, "test").texts
    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name) / "bundle"
        folder, export_s = _write_bundle(spec, args.layer, dtype, root)
        started = time.perf_counter()
        bundle = Bundle(root, "cpu")
        load_cut_s = time.perf_counter() - started
        started = time.perf_counter()
        full = HFHiddenStateExtractor(spec, "cpu", dtype, spec.default_pooling, spec.max_length)
        load_full_s = time.perf_counter() - started
        cut_bytes = _bytes(folder)
        full_params, cut_params = param_count(full.model), param_count(bundle.members[0].extractor.model)
        warm = texts[:8]  # first calls pay one-off kernel set-up: not part of either path's cost
        bundle.probabilities(warm)
        full.encode_ids(full.tokenize(warm))
        times, cpu, labels = _interleaved(_paths(bundle, full, texts, args.layer), args.repeats)
        # The full weights stored as the cut is (Linear weights in the compute dtype), and as shipped.
        if dtype != "fp32":
            cast_linear_weights(full.model, weights_dtype(dtype))
        full_stored = sum(p.numel() * p.element_size() for p in {id(p): p for p in full.model.parameters()}.values())
    shipped = sum(p.stat().st_size for p in weight_files(spec.path)) if spec.path else 0
    agree = float((labels["exported predict"] == labels["extract all layers + head"]).mean())
    _print_speed(args, dtype, len(texts), times, cpu, agree)
    print(f"  load: cut {load_cut_s:.1f} s, full {load_full_s:.1f} s; export of the cut member {export_s:.1f} s")
    print(f"  params: cut {cut_params / 1e6:.1f} M of {full_params / 1e6:.1f} M")
    print(f"  on disk: cut member {cut_bytes / 2**20:.0f} MB; full weights stored alike {full_stored / 2**20:.0f} MB, "
          f"as shipped {shipped / 2**20:.0f} MB")  # fmt: skip
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
