"""Report parts without MLflow: statistics by hand, layer-spec bookkeeping, and figures free of clashing text."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from benchmark.core.config import load_config
from benchmark.report.best.reproduce import _set_value
from benchmark.report.common import style
from benchmark.report.common.labels import display, last_k, single_layer
from benchmark.report.common.stats import bootstrap_ci, mcnemar_exact, paired_t, unit_stats
from benchmark.report.cost import figure as cost
from benchmark.report.fusion import figure as fusion
from benchmark.report.layers import figure as layers
from lightning_modules.fusion_index import fusion_names

DATASETS = ("sst2", "/data/corpora/movie-reviews-with-a-long-folder-name")


def test_unit_stats_by_hand() -> None:
    s = unit_stats([0.82, 0.84, 0.83])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.83), pytest.approx(0.01))
    assert (s.ci_low, s.ci_high) == pytest.approx((0.82, 0.84))  # each extreme mean has mass 1/27 > 2.5%
    one = unit_stats([0.9])
    assert one.mean == 0.9 and math.isnan(one.std) and math.isnan(one.ci_low)
    low, high = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert 0.2 < low < 0.35 < high < 0.5 and bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == (low, high)


def test_mcnemar_and_paired_t_by_hand() -> None:
    a = np.array([1, 1, 1, 1, 1, 0, 1], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 1, 1], dtype=bool)
    m = mcnemar_exact(a, b)  # 3 vs 1 discordant: p = 2 * (C(4,0) + C(4,1)) / 16 = 0.625
    assert (m.only_a, m.only_b, m.p_value) == (3, 1, 0.625)
    assert mcnemar_exact(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar_exact(a, b[:3])
    t = paired_t([0.85, 0.86, 0.87], [0.83, 0.85, 0.84])
    assert t.t == pytest.approx(0.02 / (0.01 / math.sqrt(3)))
    assert t.p_value == pytest.approx(1 - t.t / math.sqrt(2 + t.t**2), rel=1e-6)  # Student t, 2 dof, two-sided
    flat = paired_t([0.8, 0.9], [0.7, 0.8])  # equal differences: no spread, no test
    assert flat.mean_diff == pytest.approx(0.1) and math.isnan(flat.t) and math.isnan(flat.p_value)


@pytest.mark.parametrize(
    ("text", "depth", "layer", "agg_k"),
    [
        ("16", 30, 16, None),
        ("-1", 30, 30, None),
        ("-2", None, None, None),
        ("last", 4, 4, None),
        ("mean:last4", 30, None, ("mean", 4)),
        ("max:last1", 30, None, ("max", 1)),
        ("mean:14,15,16", 30, None, None),  # the search preset's absolute form is not a last-k point
        ("", 30, None, None),
        ("nonsense", 30, None, None),
    ],
)
def test_layer_spec_bookkeeping(text, depth, layer, agg_k) -> None:
    assert single_layer(text, depth) == layer and last_k(text) == agg_k


def test_display_names() -> None:
    names = ("mr", "HuggingFaceTB/SmolLM2-135M", "/tmp/x/tiny-bert-a/")
    assert [display(n) for n in names] == ["mr", "SmolLM2-135M", "tiny-bert-a"]


def drawn_texts(fig) -> list[Text]:
    """Every text the figure shows: tick labels only of ticks inside the axis range (others are not drawn)."""
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update((tick.label1, tick.label2))
                if lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo):
                    shown += [tick.label1, tick.label2]
    shown += [t for t in fig.findobj(Text) if t not in ticks]
    return [t for t in shown if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.lr", 3e-4),
        ("train.hidden_dims", (256, 128)),
        ("train.hidden_dims", (64,)),
        ("extract.limit", 500),
        ("train.monitor", "val/acc"),
        ("paths.cache_dir", "/data/cache dir"),
        ("data.text_column", "1e-4"),
        ("data.label_column", "None"),
        ("data.val_split", None),
        ("data.standardize", False),
    ],
)
def test_set_values_parse_back_to_themselves(key, value) -> None:
    cfg = load_config(overrides=[f"{key}={_set_value(value)}"], env={})
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == value


def clashes(fig) -> list[str]:
    """Visible texts that overlap each other or stick out of the figure."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    texts = drawn_texts(fig)
    boxes = [t.get_window_extent(renderer).expanded(0.98, 0.9) for t in texts]
    frame = fig.bbox
    out = [
        f"outside: {t.get_text()!r}"
        for t, b in zip(texts, boxes, strict=True)
        if b.x0 < frame.x0 - 1 or b.x1 > frame.x1 + 1 or b.y0 < frame.y0 - 1 or b.y1 > frame.y1 + 1
    ]
    for (ta, a), (tb, b) in itertools.combinations(zip(texts, boxes, strict=True), 2):
        if a.overlaps(b):
            out.append(f"overlap: {ta.get_text()!r} / {tb.get_text()!r}")
    return out


def layer_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    points = pd.DataFrame(
        [
            {
                "dataset": d,
                "layer": i,
                "val/acc": 0.6 + 0.01 * i + rng.normal(0, 0.01),
                "test/acc": 0.58 + 0.01 * i,
                "source": "layer-sweep",
            }
            for d in DATASETS
            for i in range(31)
        ]
    )
    rows = pd.DataFrame(
        [
            {
                "dataset": d,
                "best_layer": 24,
                "best_val_acc": 0.9,
                "best_test_acc": 0.88,
                "last_layer": 30,
                "last_val_acc": 0.85,
                "last_test_acc": 0.86,
            }
            for d in DATASETS
        ]
    )
    return points, rows


def test_figures_at_paper_scale_have_no_clashing_text() -> None:
    points, refs = layer_frames()
    last_k = pd.DataFrame(
        [
            {"dataset": d, "agg": a, "k": k, "val/acc": 0.8 + k / 100, "test/acc": 0.79 + k / 100}
            for d in DATASETS
            for a in ("mean", "max", "min")
            for k in range(1, 11)
        ]
    )
    fusions = fusion_names()
    pairs = [" + ".join(p) for p in itertools.combinations(("smollm2-135m", "minilm-l6", "minilm-l3", "tfidf"), 2)]
    fusion_rows = pd.DataFrame(
        [
            {
                "dataset": d,
                "pair": p,
                "fusion": f,
                "val_acc": 0.8 + i / 100 - j / 50,
                "test_acc": 0.79 + i / 100,
                "chosen": f == fusions[-1],
            }
            for d in DATASETS
            for j, p in enumerate(pairs)
            for i, f in enumerate(fusions)
        ]
    )
    trials = pd.DataFrame(
        [
            {
                "dataset": d,
                "n_models": n,
                "val/acc": 0.7 + n / 20 + j / 100,
                "test/acc": 0.7 + n / 20,
                "perf/fused_dim": 384 * n,
                "perf/feature_bytes": 2**20 * 10.0 ** (n + j / 3),
                "perf/extract_ms_per_sample": 3.0 * n,
                "perf/head_ms_per_sample": 0.01 * n,
            }
            for d in DATASETS
            for n in (1, 2, 3, 5)
            for j in range(3)
        ]
    )
    front = pd.DataFrame([{"dataset": d, "feature_mib": 10.0, "val_acc": 0.8, "test_acc": 0.79} for d in DATASETS])
    figures = {
        "acc_by_layer": layers.acc_by_layer(points, refs, "smollm2-135m"),
        "last_k": layers.last_k_curves(last_k, refs, "smollm2-135m"),
        "fusion": fusion.fusion_methods(fusion_rows, {d: 0.81 for d in DATASETS}),
        "cost": cost.cost_vs_models(trials),
        "acc_vs_cost": cost.acc_vs_cost(trials, front),
    }
    for name, fig in figures.items():
        assert clashes(fig) == [], name
        plots_ = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert all(ax.get_xlabel() for ax in plots_) and plots_[0].get_ylabel(), name
        keyed = fig.legends or len(plots_) < len(fig.axes)  # a legend, or colour bars for the heatmaps
        assert keyed and (fig._suptitle is not None or all(ax.get_title() for ax in plots_)), name
    for ax in figures["last_k"].axes:  # no marker on the frame: k = 1..10 with room either side
        assert ax.get_xlim()[0] < 1 and ax.get_xlim()[1] > 10
    heat = figures["fusion"]
    frames = [p for ax in heat.axes for p in ax.patches if not p.get_fill()]
    assert len(frames) == len(DATASETS) * len(pairs)  # one frame per pair: the fusion chosen on validation
    cells = [t.get_text() for ax in heat.axes for t in ax.texts]
    assert len(cells) == len(fusion_rows) and "0.790\nval 0.800" in cells


def test_layer_figure_marks_points_from_search_trials_and_keeps_stars_inside() -> None:
    points = pd.DataFrame(
        [
            {"dataset": "mr", "layer": layer, "val/acc": val, "test/acc": val - 0.01, "source": "trial"}
            for layer, val in ((2, 0.70), (5, 0.90))
        ]
    )
    rows = pd.DataFrame(
        [
            {
                "dataset": "mr",
                "best_layer": 5,
                "best_val_acc": 0.90,
                "best_test_acc": 0.89,
                "last_layer": 6,
                "last_val_acc": math.nan,
                "last_test_acc": math.nan,
            }
        ]
    )
    fig = layers.acc_by_layer(points, rows, "emb")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"validation: {style.FROM_TRIALS}" in labels and f"test: {style.FROM_TRIALS}" in labels
    assert not any("layer sweep" in label for label in labels)  # nothing here came from a sweep
    ax = fig.axes[0]
    diamonds = [ln for ln in ax.lines if ln.get_marker() == "D" and len(ln.get_xdata())]
    assert diamonds and all(ln.get_linestyle() == "None" for ln in diamonds)  # other head settings: not joined
    low, high = ax.get_ylim()
    assert high - 0.90 > 0.1 * (0.90 - 0.69) and 0.69 - low > 0.1 * (0.90 - 0.69)  # stars clear of the frame
    assert clashes(fig) == []
