"""Extractor behaviour on tiny local models: pooled values, order, cache hits, resume, corruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.cache import CacheError, CacheWriter, FeatureCache, is_complete
from benchmark.config import BenchConfig, load_config
from benchmark.keys import POOLING_NAMES
from extractors import hf as hf_module
from extractors.pooling import POOLINGS
from extractors.run import extract_all


def make_cfg(model: Path, data: Path, cache: Path, **sets: object) -> BenchConfig:
    base = {"extract.models": (str(model),), "extract.dataset": str(data), "extract.splits": ("train",),
            "extract.dtype": "fp32", "extract.device": "cpu", "paths.cache_dir": str(cache),
            "extract.show_progress": False, "extract.chunk_size": 5, "extract.token_budget": 40}
    base.update(sets)
    return load_config(env={}, **base)


def hand_pool(model_dir: Path, text: str, pooling: str) -> np.ndarray:
    """Pool one text run alone (no padding at all) straight from ``output_hidden_states``: (L+1, H)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        states = model(**ids, output_hidden_states=True).hidden_states
    h = torch.stack(states)[:, 0]  # (L+1, T, H)
    by_name = {"mean": h.mean(1), "max": h.max(1).values, "cls": h[:, 0], "last_token": h[:, -1]}
    return by_name[pooling].numpy()


def test_pooling_registry_matches_key_names() -> None:
    assert set(POOLINGS.names()) == set(POOLING_NAMES)


@pytest.mark.parametrize("side", ["left", "right"])
def test_poolings_ignore_padding_on_either_side(side: str) -> None:
    real = torch.tensor([[1.0, 5.0], [3.0, -1.0], [2.0, 2.0]])  # (T=3, H=2)
    pad = torch.full((2, 2), 100.0)
    hidden = torch.cat([pad, real]) if side == "left" else torch.cat([real, pad])  # (5, 2)
    mask = torch.tensor([0, 0, 1, 1, 1]) if side == "left" else torch.tensor([1, 1, 1, 0, 0])
    expect = {"mean": real.mean(0), "max": real.max(0).values, "cls": real[0], "last_token": real[-1]}
    for name, value in expect.items():
        out = POOLINGS.get(name)(hidden[None, None], mask[None])  # (1 layer, B=1, H)
        assert torch.allclose(out[0, 0], value), name


@pytest.mark.parametrize("model_name", ["llama-left", "llama-right", "bert-a", "bert-a-left"])
@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "last_token"])
def test_pooled_features_equal_hand_computation(tiny_models, tiny_data, cache_dir, model_name, pooling) -> None:
    model = tiny_models[model_name]
    cfg = make_cfg(model, tiny_data, cache_dir, **{"extract.pooling": pooling})
    (summary,) = extract_all(cfg)
    cache = FeatureCache(summary.path)
    texts = [line.split(",")[0] for line in (tiny_data / "train.csv").read_text().splitlines()[1:]]
    assert cache.n == len(texts) == 24
    assert cache.num_layers == 3 if "llama" in model_name else 2
    # Rows are compared by original index, so this also proves length sorting put every row back.
    for row in (0, 5, 17, 23):
        expect = hand_pool(model, texts[row], pooling)
        got = np.stack([cache.layer(i)[row] for i in range(cache.num_layers + 1)]).astype(np.float32)
        np.testing.assert_allclose(got, expect, rtol=2e-2, atol=2e-2)


def test_labels_and_meta(tiny_models, tiny_data, cache_dir) -> None:
    (summary,) = extract_all(make_cfg(tiny_models["bert-b"], tiny_data, cache_dir))
    cache = FeatureCache(summary.path)
    assert cache.label_names == ["neg", "pos"]
    assert cache.labels().tolist() == [i % 2 for i in range(24)]  # fixture alternates neg/pos
    meta = cache.meta
    assert meta["hidden_size"] == 48 and meta["n"] == 24 and meta["dtype"] == "fp32" and meta["pooling"] == "mean"
    assert meta["tokens"] > 24 and meta["tokens_per_s"] > 0 and meta["extract_ms_per_sample"] > 0
    assert {"torch", "transformers", "numpy"} <= set(meta["versions"])
    assert cache.layer(0).dtype == np.float16 and isinstance(cache.layer(-1), np.memmap)


def test_cache_hit_loads_no_model(tiny_models, tiny_data, cache_dir, monkeypatch) -> None:
    cfg = make_cfg(tiny_models["bert-a"], tiny_data, cache_dir, **{"extract.splits": ("train", "test")})
    first = extract_all(cfg)
    assert [s.cached for s in first] == [False, False]

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded on a cache hit")

    monkeypatch.setattr(hf_module.HFHiddenStateExtractor, "__init__", boom)
    second = extract_all(cfg)
    assert [s.cached for s in second] == [True, True]
    assert [s.path for s in second] == [s.path for s in first]


def test_interrupted_extraction_resumes_byte_identical(tiny_models, tiny_data, tmp_path, monkeypatch) -> None:
    model = tiny_models["llama-left"]
    clean = extract_all(make_cfg(model, tiny_data, tmp_path / "clean"))[0].path

    cfg = make_cfg(model, tiny_data, tmp_path / "resumed")
    real_write = CacheWriter.write_chunk
    written: list[int] = []

    def dying_write(self: CacheWriter, i: int, *args: object, **kwargs: object) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt  # the process is killed after two chunks
        real_write(self, i, *args, **kwargs)
        written.append(i)

    monkeypatch.setattr(CacheWriter, "write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_all(cfg)
    monkeypatch.setattr(CacheWriter, "write_chunk", real_write)
    target = clean.relative_to(tmp_path / "clean")
    resumed_dir = tmp_path / "resumed" / target
    assert not resumed_dir.exists() and not is_complete(resumed_dir)  # a partial run is never a cache hit

    calls: list[int] = []
    real_encode = hf_module.HFHiddenStateExtractor.encode_ids
    monkeypatch.setattr(hf_module.HFHiddenStateExtractor, "encode_ids",
                        lambda self, ids, progress=None: (calls.append(len(ids)), real_encode(self, ids, progress))[1])
    (summary,) = extract_all(cfg)
    assert summary.path == resumed_dir
    assert len(calls) == 5 - 2  # 24 texts / chunk 5 = 5 chunks, 2 were already done
    files = sorted(p.name for p in clean.iterdir() if p.suffix == ".npy")
    assert files == sorted(p.name for p in resumed_dir.iterdir() if p.suffix == ".npy")
    for name in files:
        assert (clean / name).read_bytes() == (resumed_dir / name).read_bytes(), name
    assert not resumed_dir.with_name(resumed_dir.name + ".partial").exists()


@pytest.mark.parametrize("damage", ["truncate_layer", "delete_layer", "garbage_meta", "incomplete_meta", "no_meta"])
def test_corrupted_cache_is_detected_and_re_extracted(tiny_models, tiny_data, cache_dir, damage) -> None:
    import json

    cfg = make_cfg(tiny_models["bert-a"], tiny_data, cache_dir)
    path = extract_all(cfg)[0].path
    layer = path / "layer_01.npy"
    meta = path / "meta.json"
    if damage == "truncate_layer":
        layer.write_bytes(layer.read_bytes()[:-10])
    elif damage == "delete_layer":
        layer.unlink()
    elif damage == "garbage_meta":
        meta.write_text("{not json")
    elif damage == "incomplete_meta":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "complete": False}))
    else:
        meta.unlink()
    assert not is_complete(path)
    with pytest.raises(CacheError, match=str(path.name)):
        FeatureCache(path)
    (again,) = extract_all(cfg)
    assert not again.cached and is_complete(again.path)


def test_limit_keeps_both_classes_and_original_order(tiny_models, tiny_data, cache_dir) -> None:
    from benchmark.text_data import load_split

    full = load_split(str(tiny_data), "train", ".")
    sub = load_split(str(tiny_data), "train", ".", limit=10)
    assert len(sub.texts) == 10 and set(sub.labels.tolist()) == {0, 1}
    positions = [full.texts.index(t) for t in sub.texts]
    assert positions == sorted(positions)
    assert sub.label_names == full.label_names and sub.data_sha256 != full.data_sha256


def test_batches_follow_equal_length_runs_under_the_budget() -> None:
    ex = hf_module.HFHiddenStateExtractor.__new__(hf_module.HFHiddenStateExtractor)
    ex.batch_size, ex.token_budget = 0, 100
    lengths = [20] * 3 + [10] * 12 + [9] * 2 + [5] * 30  # longest first
    sizes = [(sl.start, sl.stop) for sl in ex.batches(lengths)]
    assert sizes[0] == (0, 5)  # a run of 3 is too short to stand alone: 100 // 20 = 5 rows, padded
    assert sizes[1] == (5, 15)  # then the rest of the 10s: an unpadded run of 10 rows (100 // 10)
    covered = [i for a, b in sizes for i in range(a, b)]
    assert covered == list(range(len(lengths)))  # every row once, in order
    assert all(lengths[a] * (b - a) <= 100 for a, b in sizes)  # budget respected (longest row first)
    ex.batch_size = 7
    assert [(sl.start, sl.stop) for sl in ex.batches(lengths)][:2] == [(0, 7), (7, 14)]
