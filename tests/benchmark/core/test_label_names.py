"""Known class names: MR and SST-2 predictions read negative/positive, not the 0/1 their files write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.core import tracking
from benchmark.core.config import load_config
from benchmark.core.text_data import DATASETS, class_names


@pytest.mark.parametrize("dataset", ["mr", "sst2"])
def test_polarity_datasets_name_their_classes(dataset: str) -> None:
    assert class_names(dataset, ["0", "1"]) == ["negative", "positive"]


def test_unknown_datasets_and_unnamed_labels_keep_their_labels() -> None:
    assert class_names("r8", ["acq", "earn"]) == ["acq", "earn"]  # registered, no table: written names are names
    assert class_names("data/reviews.csv", ["0", "1"]) == ["0", "1"]  # a user's file: its labels as written
    assert class_names("mr", ["neg", "pos"]) == ["neg", "pos"]  # the hub's ClassLabel names stay
    assert all(dict(s.class_names).keys() <= {"0", "1"} for _, s in DATASETS.items())


@pytest.mark.parametrize(("dataset", "expected"), [("mr", ["negative", "positive"]), ("toy.csv", ["0", "1"])])
def test_an_exported_bundle_predicts_class_names(tmp_path: Path, dataset: str, expected: list[str]) -> None:
    from benchmark.serve.model_export import build_bundle
    from benchmark.serve.pyfunc_model import BUNDLE_FILE

    head = tmp_path / "head"
    head.mkdir()
    (head / tracking.HEAD_JSON).write_text(json.dumps({"net": {}, "label_names": ["0", "1"], "layers": {}}))
    for name in (tracking.HEAD_NET_FILE, tracking.HEAD_SCALERS_FILE):
        (head / name).write_bytes(b"")
    cfg = load_config(env={}, **{"extract.dataset": dataset})
    out = build_bundle(cfg, head, {}, tmp_path / "bundle", "copy")
    assert json.loads((out / BUNDLE_FILE).read_text())["label_names"] == expected
