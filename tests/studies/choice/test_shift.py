"""The shift check (studies.choice.shift): adversarial validation flags test texts unlike train, not its own pool."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS

from studies.choice.shift import SHIFT_AUC_THRESHOLD, hanley_mcneil, length_stats, shift_check


def _texts(n: int, low: int, high: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) for _ in range(n)]


def _features(folder: Path, texts: list[str], layer: int = 1) -> np.ndarray:
    """Mean-pooled hidden state ``layer`` of a tiny BERT, as the extractor pools it."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer]  # (N, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def test_shift_check_flags_longer_test_texts_and_not_the_same_pool(tiny_models: dict[str, Path]) -> None:
    folder = tiny_models["bert-a"]
    train = _texts(200, 3, 8, 1)
    same_pool = _texts(200, 3, 8, 2)
    longer = _texts(200, 9, 24, 3)  # 3x as long
    x_train = _features(folder, train)
    shifted = shift_check(x_train, _features(folder, longer), train, longer, "bert-a@1")
    same = shift_check(x_train, _features(folder, same_pool), train, same_pool, "bert-a@1")
    assert shifted.flagged and shifted.auc > SHIFT_AUC_THRESHOLD
    assert not same.flagged and abs(same.auc - 0.5) < 0.1
    assert same.auc_low < same.auc < same.auc_high and len(same.fold_auc) == 5
    assert shifted.lengths["test"]["median"] >= 2.5 * shifted.lengths["train"]["median"]


def test_hanley_mcneil_interval_and_length_stats() -> None:
    low, high = hanley_mcneil(0.5, 100, 100)
    # at AUC 0.5, Q1 = 1/3, Q2 = 1/3: var = (.25 + 99 (1/3 - 1/4) x 2) / 10^4
    half = 1.959964 * ((0.25 + 99 * (1 / 3 - 0.25) * 2) / 1e4) ** 0.5
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert length_stats(["a b", "a b c d"]) == {"n": 2, "mean": 3.0, "median": 3.0, "p10": 2.2, "p90": 3.8}


def test_report_opens_with_a_warning_only_for_a_flagged_dataset() -> None:
    from benchmark.report.common.render import Doc, to_markdown
    from benchmark.report.shift import shift_note, shift_warning

    lengths = {"train": {"median": 7.0}, "test": {"median": 19.0}}
    base = {"auc_low": 0.87, "auc_high": 0.91, "threshold": 0.75, "features": "minilm-l6@3", "rows": 872}
    checks = {
        "sst2": {**base, "auc": 0.89, "flagged": True, "lengths": lengths},
        "mr": {**base, "auc": 0.48, "flagged": False, "lengths": lengths},
    }
    doc = Doc("t")
    shift_warning(doc, checks)
    md = to_markdown(doc)
    assert "**Warning: on sst2, validation may not stand for test.**" in md and "ROC AUC 0.890 [0.870, 0.910]" in md
    assert "7 words long (median) in train and 19 in test" in md and "on mr" not in md
    assert shift_note(checks) == (
        "Train-vs-test shift check (adversarial validation on one cached layer, out-of-fold ROC AUC; flagged above "
        "0.75): mr: AUC 0.480, sst2: AUC 0.890 (flagged)."
    )


def test_a_study_of_texts_records_the_lengths_and_says_there_is_no_layer_to_compare(tmp_path, caplog) -> None:
    import json
    import logging

    from benchmark.core import tracking
    from benchmark.core.config_sections import TrackingConfig
    from benchmark.core.study_data import StudyData
    from benchmark.core.text_data import TextSplit
    from studies.choice.shift import record_shift

    mlc = tracking.client(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art")))
    run_id = mlc.create_run(mlc.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())).info.run_id
    split = {
        s: TextSplit("toy", s, _texts(20, 2, 9, seed), np.arange(20) % 2, ["a", "b"], s, s)
        for s, seed in (("train", 0), ("test", 1))
    }
    with caplog.at_level(logging.INFO, logger="studies.choice.shift"):
        record_shift(mlc, run_id, StudyData("toy", "toy", split, None, {}))  # the baseline's: texts, no caches
    assert "no cached layer to compare" in caplog.text and "nan" not in caplog.text
    assert tracking.SHIFT_AUC not in mlc.get_run(run_id).data.metrics
    check = json.loads(Path(mlc.download_artifacts(run_id, tracking.SHIFT_ARTIFACT, str(tmp_path))).read_text())
    assert check["lengths"]["train"]["n"] == check["lengths"]["test"]["n"] == 20
