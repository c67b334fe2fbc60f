"""The training benchmark's helpers (the benchmark itself is run by hand, see BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers_features import make_model

from benchmark.bench.train import _markdown, resample_cache
from benchmark.core.cache import FeatureCache


def test_resample_cache_keeps_selected_layers_of_drawn_rows(tmp_path: Path) -> None:
    m = make_model(tmp_path / "src", n_train=30, n_test=10, hidden=4, num_layers=4)
    out = FeatureCache(resample_cache(m.train_dir, tmp_path / "dst", n=70, seed=0, layers=[1, 3]))
    src = FeatureCache(m.train_dir)
    assert (out.n, out.num_layers, out.hidden_size) == (70, 1, 4)
    rows = np.sort(np.random.default_rng(0).choice(30, size=70, replace=True))
    np.testing.assert_array_equal(out.layer(0), np.asarray(src.layer(1))[rows])
    np.testing.assert_array_equal(out.layer(1), np.asarray(src.layer(3))[rows])
    np.testing.assert_array_equal(out.labels(), src.labels()[rows])
    assert out.texts_sha256 != src.texts_sha256


def test_markdown_reports_speedup_and_agreement() -> None:
    score = {"layer": 0, "val_acc": 0.8, "test_acc": 0.75, "epochs": 5}
    md = _markdown(
        {"scores": [score], "wall_s": 2.0, "cpu_s": 1.5, "peak_rss_mb": 500.0},
        {"results": [{**score, "test_acc": 0.7525, "fit_s": 8.0}], "wall_s": 10.0, "cpu_s": 9.0, "peak_rss_mb": 400.0},
        [],
        "cmd",
    )
    assert (
        "| speed-up (wall) | 5.0x |" in md
        and "| speed-up (CPU time) | 6.0x |" in md
        and "0.25 / 0.250" in md
        and "Command: `cmd`" in md
    )
