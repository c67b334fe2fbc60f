"""Extractor behaviour on tiny local models: pooled values, order, cache hits, resume, corruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.core.cache import CacheError, FeatureCache, is_complete
from benchmark.core.cache_writer import CacheWriter
from benchmark.core.config import BenchConfig, load_config
from extractors import hf as hf_module
from extractors.pooling import POOLINGS
from extractors.run import extract_all


def make_cfg(model: Path, data: Path, cache: Path, **sets: object) -> BenchConfig:
    base = {
        "extract.models": (str(model),),
        "extract.dataset": str(data),
        "extract.splits": ("train",),
        "extract.dtype": "fp32",
        "extract.device": "cpu",
        "paths.cache_dir": str(cache),
        "extract.show_progress": False,
        "extract.chunk_size": 5,
        "extract.token_budget": 40,
    }
    base.update(sets)
    return load_config(env={}, **base)


def hand_pool(model_dir: Path, texts: list[str], pooling: str) -> np.ndarray:
    """Pool each text run alone (no padding at all) straight from ``output_hidden_states``: (N, L+1, H)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for text in texts:
        with torch.no_grad():
            states = model(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        h = torch.stack(states)[:, 0]  # (L+1, T, H)
        by_name = {"mean": h.mean(1), "max": h.max(1).values, "cls": h[:, 0], "last_token": h[:, -1]}
        out.append(by_name[pooling].numpy())
    return np.stack(out)


def spy_forward(monkeypatch: pytest.MonkeyPatch) -> list[list[list[int]]]:
    """Record the token-id batches that reach ``_forward`` (one forward pass each)."""
    seen: list[list[list[int]]] = []
    real = hf_module.HFHiddenStateExtractor._forward

    def spy(self: hf_module.HFHiddenStateExtractor, ids: list[list[int]]) -> tuple[torch.Tensor, int]:
        seen.append([list(x) for x in ids])
        return real(self, ids)

    monkeypatch.setattr(hf_module.HFHiddenStateExtractor, "_forward", spy)
    return seen


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
def test_pooled_features_equal_hand_computation(
    tiny_models, tiny_data, cache_dir, monkeypatch, model_name, pooling
) -> None:
    model = tiny_models[model_name]
    cfg = make_cfg(model, tiny_data, cache_dir, **{"extract.pooling": pooling})
    batches = spy_forward(monkeypatch)
    (summary,) = extract_all(cfg)
    cache = FeatureCache(summary.path)
    texts = [line.split(",")[0] for line in (tiny_data / "train.csv").read_text().splitlines()[1:]]
    assert cache.n == len(texts) == 24
    assert cache.num_layers == 3 if "llama" in model_name else 2
    # The extraction really padded rows (on the tokenizer's side) and ran them out of their original order.
    from transformers import AutoTokenizer

    ids = [tuple(x) for x in AutoTokenizer.from_pretrained(model)(texts)["input_ids"]]
    processed = [tuple(x) for batch in batches for x in batch]
    assert sorted(processed) == sorted(ids) and processed != ids
    padded = {tuple(x) for batch in batches if len({len(y) for y in batch}) > 1 for x in batch}
    assert len(padded) >= 8, "too few rows ran in padded batches for this test to check padding"
    # Every row is compared by original index, so this also proves length sorting put every row back.
    expect = hand_pool(model, texts, pooling)  # (N, L+1, H)
    got = np.stack([cache.layer(i) for i in range(cache.num_layers + 1)], axis=1).astype(np.float32)
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
    kill_after_two_chunks(cfg, monkeypatch)
    target = clean.relative_to(tmp_path / "clean")
    resumed_dir = tmp_path / "resumed" / target
    assert not resumed_dir.exists() and not is_complete(resumed_dir)  # a partial run is never a cache hit

    calls: list[int] = []
    real_encode = hf_module.HFHiddenStateExtractor.encode_ids
    monkeypatch.setattr(
        hf_module.HFHiddenStateExtractor,
        "encode_ids",
        lambda self, ids, progress=None: (calls.append(len(ids)), real_encode(self, ids, progress))[1],
    )
    (summary,) = extract_all(cfg)
    assert summary.path == resumed_dir
    assert len(calls) == 5 - 2  # 24 texts / chunk 5 = 5 chunks, 2 were already done
    files = sorted(p.name for p in clean.iterdir() if p.suffix == ".npy")
    assert files == sorted(p.name for p in resumed_dir.iterdir() if p.suffix == ".npy")
    for name in files:
        assert (clean / name).read_bytes() == (resumed_dir / name).read_bytes(), name
    assert not resumed_dir.with_name(resumed_dir.name + ".partial").exists()


@pytest.mark.parametrize(
    "damage",
    [
        "truncate_layer",
        "delete_layer",
        "garbage_meta",
        "incomplete_meta",
        "no_meta",
        "meta_is_list",
        "meta_without_n",
        "meta_without_files",
        "meta_files_not_dict",
    ],
)
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
    elif damage == "meta_is_list":
        meta.write_text(json.dumps([json.loads(meta.read_text())]))
    elif damage in ("meta_without_n", "meta_without_files"):
        good = json.loads(meta.read_text())
        del good[damage.removeprefix("meta_without_")]
        meta.write_text(json.dumps(good))
    elif damage == "meta_files_not_dict":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "files": ["layer_00.npy"]}))
    else:
        meta.unlink()
    assert not is_complete(path)
    with pytest.raises(CacheError, match=str(path.name)):
        FeatureCache(path)
    (again,) = extract_all(cfg)
    assert not again.cached and is_complete(again.path)


def test_limit_keeps_both_classes_and_original_order(tiny_models, tiny_data, cache_dir) -> None:
    from benchmark.core.text_data import load_split

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


def test_overwrite_always_re_extracts_a_complete_cache(tiny_models, tiny_data, cache_dir, monkeypatch) -> None:
    cfg = make_cfg(tiny_models["bert-a"], tiny_data, cache_dir)
    first = extract_all(cfg)[0].path
    before = FeatureCache(first).meta["extract_seconds"]
    batches = spy_forward(monkeypatch)
    (again,) = extract_all(make_cfg(tiny_models["bert-a"], tiny_data, cache_dir, **{"extract.overwrite": "always"}))
    assert not again.cached and again.path == first and is_complete(first)
    assert sum(len(b) for b in batches) == 24  # every text went through the model again
    assert FeatureCache(first).meta["extract_seconds"] != before  # a new meta.json, not the old one
    leftovers = [p.name for p in first.parent.iterdir() if p.name != first.name and not p.name.endswith(".lock")]
    assert leftovers == []  # no .partial or .old directory is left behind


def tiny_extractor(model: Path, token_budget: int = 60, batch_size: int = 0) -> hf_module.HFHiddenStateExtractor:
    from benchmark.core.models import resolve_model

    return hf_module.HFHiddenStateExtractor(
        resolve_model(str(model), "."), "cpu", "fp32", "mean", 64, batch_size=batch_size, token_budget=token_budget
    )


def kill_after_two_chunks(cfg: BenchConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``extract_all(cfg)`` as a process killed once it has written two chunks."""
    real_write = CacheWriter.write_chunk
    written: list[int] = []

    def dying_write(self: CacheWriter, i: int, *args: object, **kwargs: object) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt
        real_write(self, i, *args, **kwargs)
        written.append(i)

    monkeypatch.setattr(CacheWriter, "write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_all(cfg)
    monkeypatch.setattr(CacheWriter, "write_chunk", real_write)


def sorted_ids(ex: hf_module.HFHiddenStateExtractor, data: Path) -> list[list[int]]:
    texts = [line.split(",")[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
    return sorted(ex.tokenize(texts), key=len, reverse=True)


def test_one_forward_pass_per_batch_yields_every_layer(tiny_models, tiny_data) -> None:
    ex = tiny_extractor(tiny_models["llama-left"])
    ids = sorted_ids(ex, tiny_data)
    calls: list[int] = []
    handle = ex.model.register_forward_hook(lambda module, args, out: calls.append(len(out.hidden_states)))
    try:
        feats, stats = ex.encode_ids(ids)
    finally:
        handle.remove()
    n_batches = len(list(ex.batches([len(x) for x in ids])))
    assert 1 < n_batches < len(ids)
    assert len(calls) == n_batches  # never one pass per layer
    assert set(calls) == {ex.num_layers + 1}  # each pass returned all L+1 hidden states
    assert feats.shape == (ex.num_layers + 1, len(ids), ex.hidden_size)
    assert stats.tokens == sum(len(x) for x in ids)


def test_cuda_out_of_memory_halves_the_batch_and_the_budget(tiny_models, tiny_data, monkeypatch) -> None:
    ex = tiny_extractor(tiny_models["bert-a"], token_budget=200)
    ids = sorted_ids(ex, tiny_data)
    unsplit, _ = ex.encode_ids(ids)
    fits = 3  # the largest batch that "fits in GPU memory"
    failed: list[int] = []
    real = hf_module.HFHiddenStateExtractor._forward

    def small_gpu(self: hf_module.HFHiddenStateExtractor, batch: list[list[int]]) -> tuple[torch.Tensor, int]:
        if len(batch) > fits:
            failed.append(len(batch) * max(len(x) for x in batch))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, batch)

    monkeypatch.setattr(hf_module.HFHiddenStateExtractor, "_forward", small_gpu)
    split, stats = ex.encode_ids(ids)
    assert failed and failed[0] <= 200
    assert ex.token_budget == min(failed) // 2  # half of the smallest batch that failed, not halved per failure
    np.testing.assert_allclose(split.astype(np.float32), unsplit.astype(np.float32), rtol=1e-3, atol=1e-3)
    assert stats.tokens == sum(len(x) for x in ids)
    ex.batch_size = 6  # a fixed batch size is halved too, until a batch fits
    ex.encode_ids(ids)
    assert ex.batch_size == 3


def test_resume_uses_the_batching_of_the_unfinished_run(tiny_models, tiny_data, tmp_path, monkeypatch, caplog) -> None:
    model = tiny_models["llama-left"]
    clean = extract_all(make_cfg(model, tiny_data, tmp_path / "clean"))[0].path
    cfg = make_cfg(model, tiny_data, tmp_path / "resumed")
    kill_after_two_chunks(cfg, monkeypatch)

    budgets: list[tuple[int, int]] = []
    real_encode = hf_module.HFHiddenStateExtractor.encode_ids
    monkeypatch.setattr(
        hf_module.HFHiddenStateExtractor,
        "encode_ids",
        lambda self, ids, progress=None: (
            budgets.append((self.batch_size, self.token_budget)),
            real_encode(self, ids, progress),
        )[1],
    )
    other = make_cfg(model, tiny_data, tmp_path / "resumed", **{"extract.token_budget": 1000, "extract.batch_size": 7})
    with caplog.at_level("INFO", logger="extractors.run"):
        (summary,) = extract_all(other)
    assert budgets == [(0, 40)] * 3  # the recorded settings, not the ones this run asked for
    assert "resuming with the batching of the unfinished run" in caplog.text
    assert FeatureCache(summary.path).meta["batching"] == {"batch_size": 0, "token_budget": 40, "device": "cpu"}
    for name in sorted(p.name for p in clean.iterdir() if p.suffix == ".npy"):
        assert (clean / name).read_bytes() == (summary.path / name).read_bytes(), name


def test_resume_made_on_an_unusable_device_starts_over(tiny_models, tiny_data, cache_dir, monkeypatch, caplog) -> None:
    import json

    from benchmark.core.cache_writer import partial_dir

    cfg = make_cfg(tiny_models["bert-a"], tiny_data, cache_dir)
    real_finalize = CacheWriter.finalize
    monkeypatch.setattr(CacheWriter, "finalize", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        extract_all(cfg)  # every chunk written, not assembled
    monkeypatch.setattr(CacheWriter, "finalize", real_finalize)
    (state_file,) = cache_dir.rglob("partial.json")
    state = json.loads(state_file.read_text())
    state["batching"]["device"] = "cuda"  # as if a GPU machine had started it
    state_file.write_text(json.dumps(state))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    batches = spy_forward(monkeypatch)
    with caplog.at_level("WARNING", logger="extractors.run"):
        (summary,) = extract_all(cfg)
    assert "made on cuda, which this run cannot use; starting over on cpu" in caplog.text
    assert sum(len(b) for b in batches) == 24 and not partial_dir(summary.path).exists()
    assert FeatureCache(summary.path).meta["batching"]["device"] == "cpu"


def test_weights_hash_is_remembered_until_the_file_changes(tiny_models, tmp_path, monkeypatch) -> None:
    import os
    import shutil

    from benchmark.core import models

    folder = shutil.copytree(tiny_models["bert-a"], tmp_path / "model")
    hashed: list[int] = []
    real = models._hash_files.__wrapped__  # bypass the in-process memo: a new process has none

    def counting(files: tuple[tuple[str, int, int], ...]) -> str:
        hashed.append(len(files))
        return real(files)

    monkeypatch.setattr(models, "_hash_files", counting)
    spec = models.resolve_model(str(folder), ".")
    first = models.model_revision(spec, tmp_path / "cache")
    assert hashed == [1] and (tmp_path / "cache" / models.WEIGHTS_HASH_FILE).is_file()
    assert models.model_revision(spec, tmp_path / "cache") == first and hashed == [1]  # no weight byte read
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert models.model_revision(spec, tmp_path / "cache") == first and hashed == [1, 1]  # touched: hashed again
    assert models.model_revision(spec, tmp_path / "cache") == first and hashed == [1, 1]
    assert models.model_revision(spec, None) == first and hashed == [1, 1, 1]  # without a cache dir: no memo


def test_local_model_max_length_follows_its_position_limit(tiny_models, tiny_data, cache_dir) -> None:
    from benchmark.core.errors import UserError
    from benchmark.core.keys import load_text_split, resolve_features

    cfg = make_cfg(tiny_models["bert-a"], tiny_data, cache_dir)
    rf = resolve_features(cfg, str(tiny_models["bert-a"]), load_text_split(cfg, "train"))
    assert rf.spec.max_length == 64 and rf.key.max_length == 64  # the fixture's max_position_embeddings
    too_long = make_cfg(tiny_models["bert-a"], tiny_data, cache_dir, **{"extract.max_length": 65})
    with pytest.raises(UserError, match="max length 65 exceeds the 64 positions .*--max-length 64"):
        resolve_features(too_long, str(tiny_models["bert-a"]), load_text_split(cfg, "train"))


# ---------------------------------------------------------------- data files and the hub


def test_jsonl_and_parquet_splits_ignore_other_json_files(tmp_path) -> None:
    import json

    import pandas as pd

    from benchmark.core.text_data import load_split

    folder = tmp_path / "reviews"
    folder.mkdir()
    rows = [{"text": f"text {i}", "label": ("neg", "pos", "neu")[i % 3]} for i in range(6)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame([{"text": "held out", "label": "neu"}, {"text": "another", "label": "pos"}]).to_parquet(
        folder / "test.parquet"
    )
    (folder / "dataset_info.json").write_text(json.dumps({"description": "not a split", "citation": ""}))
    train = load_split(str(folder), "train", ".")
    test = load_split(str(folder), "test", ".")
    assert train.texts == [r["text"] for r in rows] and test.texts == ["held out", "another"]
    assert train.label_names == test.label_names == ["neg", "neu", "pos"]  # one mapping, though test has no neg
    assert train.labels.tolist() == [0, 2, 1, 0, 2, 1] and test.labels.tolist() == [1, 2]
    pattern = load_split(str(folder / "{split}.jsonl"), "train", ".")
    assert pattern.texts == train.texts


def test_missing_label_column_names_the_columns(tmp_path) -> None:
    from benchmark.core.errors import UserError
    from benchmark.core.text_data import load_split

    folder = tmp_path / "nolabel"
    folder.mkdir()
    (folder / "train.csv").write_text("text,stars\nnice,5\n")
    with pytest.raises(
        UserError, match=r"no column 'label' \(columns: text, stars\); set --set data.label_column=<name>"
    ):
        load_split(str(folder), "train", ".")


def fake_hub(
    monkeypatch: pytest.MonkeyPatch,
    splits: dict[str, dict[str, list[object]]],
    text: str = "sentence",
    offline: bool = False,
) -> list[str]:
    """Replace ``datasets.load_dataset`` with an in-memory DatasetDict (no download); returns the ids asked for."""
    import datasets

    asked: list[str] = []
    features = datasets.Features(
        {text: datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )

    def load_dataset(path: str, name: str | None = None, **kwargs: object) -> datasets.DatasetDict:
        asked.append(path)
        return datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=features) for k, v in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", offline)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    return asked


SST2_HUB = {
    "train": {"sentence": ["a fine film ", "dull"], "label": [1, 0]},
    "validation": {"sentence": ["great", "awful", "okay"], "label": [1, 0, 1]},
    "test": {"sentence": ["unlabelled"], "label": [-1]},
}


def test_builtin_dataset_falls_back_to_its_hub_copy(tmp_path, monkeypatch, caplog) -> None:
    from benchmark.core.text_data import load_split

    asked = fake_hub(monkeypatch, SST2_HUB)
    with caplog.at_level("INFO", logger="benchmark.core.text_data"):
        test = load_split("sst2", "test", tmp_path / "no-data")
    assert asked == ["stanfordnlp/sst2"] and "loading stanfordnlp/sst2 from the Hugging Face hub" in caplog.text
    assert test.texts == ["great", "awful", "okay"]  # our test split is the hub's labelled validation split
    assert test.label_names == ["negative", "positive"] and test.labels.tolist() == [1, 0, 1]
    assert load_split("sst2", "train", tmp_path / "no-data", limit=1).texts[0] in ("a fine film", "dull")


def test_hub_dataset_errors_are_one_clear_line(tmp_path, monkeypatch) -> None:
    import datasets

    from benchmark.core.errors import UserError
    from benchmark.core.text_data import load_split

    fake_hub(monkeypatch, SST2_HUB)
    with pytest.raises(UserError, match=r"hub dataset org/glue-like split 'test' has no labels"):
        load_split("org/glue-like", "test", tmp_path, text_column="sentence")
    with pytest.raises(UserError, match=r"no column 'text' \(columns: sentence, label\); set --set data.text_column="):
        load_split("org/glue-like", "train", tmp_path)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(
        UserError, match=r"no local folder .*no-data/mr and its hub copy .* unreachable .*LAYERFUSE_DATA_DIR"
    ):
        load_split("mr", "train", tmp_path / "no-data")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(UserError, match=r"offline mode is on .*put mr/train.csv and test.csv under paths.data_dir"):
        load_split("mr", "train", tmp_path / "no-data")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_cpu_low_precision_weights_cast_once_bit_identical_to_autocast(tiny_models, tiny_data, dtype) -> None:
    from benchmark.core.models import resolve_model

    spec = resolve_model(str(tiny_models["llama-left"]), ".")
    ex = hf_module.HFHiddenStateExtractor(spec, "cpu", dtype, "mean", 64, token_budget=60)
    linears = [m for m in ex.model.modules() if isinstance(m, torch.nn.Linear)]
    assert ex.cast_linears and linears and all(m.weight.dtype == hf_module.TORCH_DTYPES[dtype] for m in linears)
    assert ex.model.embed_tokens.weight.dtype == torch.float32  # layer 0 (embeddings) keeps full precision
    ids = sorted_ids(ex, tiny_data)
    cast_once, _ = ex.encode_ids(ids)

    # fp32 weights, cast by autocast on every batch
    reference = hf_module.HFHiddenStateExtractor(spec, "cpu", dtype, "mean", 64, token_budget=60, cast_weights=False)
    assert not reference.cast_linears and reference.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    per_batch, _ = reference.encode_ids(ids)
    assert np.array_equal(cast_once, per_batch)  # same bytes, so caches made either way stay valid

    # A model that runs a Linear with autocast off cannot take a low-precision weight: reload with fp32 weights.
    def autocast_off(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if module.weight.dtype != args[0].dtype:
            raise RuntimeError(
                f"mat1 and mat2 must have the same dtype, but got {args[0].dtype} and {module.weight.dtype}"
            )

    linears[0].register_forward_pre_hook(autocast_off)
    fallback, _ = ex.encode_ids(ids)
    assert not ex.cast_linears and all(
        m.weight.dtype == torch.float32 for m in ex.model.modules() if isinstance(m, torch.nn.Linear)
    )
    assert np.array_equal(fallback, per_batch)


def test_bf16_extraction_on_a_cpu_without_bf16_instructions_is_warned_once(tiny_models, monkeypatch, caplog) -> None:
    from benchmark.core import hardware
    from benchmark.core.models import resolve_model

    spec = resolve_model(str(tiny_models["bert-a"]), ".")
    monkeypatch.setattr(hardware, "_WARNED", set())
    said = lambda: [r for r in caplog.records if "bf16 matrix products are emulated" in r.getMessage()]  # noqa: E731
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    hf_module.HFHiddenStateExtractor(spec, "cpu", "bf16", "mean", 32)
    assert said() == []
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    hf_module.HFHiddenStateExtractor(spec, "cpu", "fp32", "mean", 32)
    assert said() == []
    for _ in range(2):  # one model after another: said once
        hf_module.HFHiddenStateExtractor(spec, "cpu", "bf16", "mean", 32)
    (warning,) = said()
    assert warning.getMessage().startswith("extract.dtype=bf16 on a CPU without amx_bf16 or avx512_bf16")
    assert "--dtype auto" in warning.getMessage()
