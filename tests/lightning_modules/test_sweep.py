"""The engine's heads against the reference single fit (``tests/reference_fit.py``): sweeps, units, refits.

Bit-equal where the stacked heads have no trunk (single layers): same best epoch, same validation loss bits. On
Intel CPUs (MKL vs AMD's code paths for small GEMMs) the summation order of a stacked and a single GEMM can differ,
so validation losses are compared to ``LOSS_TOL`` = 1e-5, the issue's bar, not bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers_features import make_model
from reference_fit import reference_fit

from benchmark.core.config import BenchConfig, load_config, with_values
from lightning_modules import batched
from lightning_modules.callbacks import torch_threads
from lightning_modules.fit import fit_all_rows, fit_units, sweep_layers, sweep_units
from lightning_modules.scores import LayerScore

LOSS_TOL = 1e-5


def _cfg(**values: Any) -> BenchConfig:
    base = {
        "train.max_epochs": 8,
        "train.lr": 5e-3,
        "train.batch_size": 32,
        "train.patience": 2,
        "train.hidden_dims": (16, 8),
        "train.dropout": 0.3,
    }
    return with_values(load_config(env={}), {**base, **values})


def _assert_agree(scores: list[LayerScore], cfg: BenchConfig, model: Any, tol: float = 1e-6) -> None:
    with torch_threads(1):
        for s in scores:
            r = reference_fit(cfg, [model.select(s.layer)])
            assert (s.best_epoch, s.epochs) == (r.best_epoch, r.epochs), f"layer {s.layer}"
            for name in ("val_acc", "val_f1", "test_acc"):
                assert getattr(s, name) == pytest.approx(getattr(r, name), abs=tol), f"layer {s.layer} {name}"
            assert s.val_loss == pytest.approx(r.val_loss, abs=LOSS_TOL), f"layer {s.layer} val_loss"
            assert np.array_equal(s.val_pred, r.val_pred) and np.array_equal(s.val_rows, r.val_rows), s.layer
            assert s.curves["val/loss"] == pytest.approx(r.val_losses, abs=LOSS_TOL), s.layer


@pytest.mark.parametrize(("monitor", "resident"), [("val/loss", True), ("val/acc", False)])
def test_sweep_equals_separate_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monitor: str, resident: bool
) -> None:
    if not resident:  # rows streamed from the layer files per batch instead of held in memory
        monkeypatch.setattr("lightning_modules.engine.RESIDENT_BYTES", 0)
    m = make_model(tmp_path, n_train=96, n_test=60, hidden=12, num_layers=2, num_classes=3, signal=1.2)
    cfg = _cfg(**{"train.monitor": monitor})
    train_shapes: list[int] = []
    forward = batched.BatchedHeads.forward

    def spy(self: batched.BatchedHeads, x: torch.Tensor, train: bool) -> torch.Tensor:
        if train:
            train_shapes.append(x.shape[0])
        return forward(self, x, train)

    monkeypatch.setattr(batched.BatchedHeads, "forward", spy)
    scores = sweep_layers(m.train_dir, m.test_dir, cfg)
    assert [s.layer for s in scores] == [0, 1, 2]
    assert min(s.epochs for s in scores) < cfg.train.max_epochs  # some layer stopped early and left the batch
    # A stopped layer costs nothing: each training batch of epoch e stacks only the layers that train past e.
    steps = math.ceil(86 / 32)  # 96 rows minus 10% stratified validation, batches of 32
    assert train_shapes == [
        sum(s.epochs > e for s in scores) for e in range(max(s.epochs for s in scores)) for _ in range(steps)
    ]
    assert scores[-1].test_acc > scores[0].test_acc  # the synthetic signal grows with depth
    _assert_agree(scores, cfg, m)


@pytest.mark.parametrize(
    ("in_dim", "hidden", "classes", "seeds"),
    [(576, (256,), 2, (0,) * 5), (12, (16, 8), 3, (0,) * 5), (12, (16, 8), 3, (0, 1, 0, 2, 1))],
)
def test_batched_training_is_bit_equal_to_each_heads_own(
    in_dim: int, hidden: tuple[int, ...], classes: int, seeds: tuple[int, ...]
) -> None:
    """Logits, gradients and 30 fused-Adam steps of the stacked heads equal each head's own, bit for bit.

    The paper's head (576 -> 256 -> 2) and a ragged one: tensors whose size is not a multiple of the SIMD
    width (the output biases, 8 x 3 weights) round differently inside a stack under fused Adam. One thread,
    as fits and sweeps train by default (train.threads): threads split reductions differently per shape.
    Heads of several seeds (the units of cross-validation) each get their own seed's dropout masks.
    """
    with torch_threads(1):
        _train_both(in_dim, hidden, classes, seeds)


def _train_both(in_dim: int, hidden: tuple[int, ...], classes: int, seeds: tuple[int, ...]) -> None:
    from lightning_modules.components.classifier import MLPHead, make_adam

    n, gen = len(seeds), torch.Generator().manual_seed(0)
    heads = [MLPHead(in_dim, hidden, classes, 0.1, seed=s) for s in seeds]
    with torch.no_grad():
        for h in heads:  # same seed, same initial weights: make the heads differ
            for p in h.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    stacked = batched.BatchedHeads(heads, torch.device("cpu"))
    opt, own_opts = make_adam(stacked.parameters(), 1e-3, 0.0), [make_adam(h.parameters(), 1e-3, 0.0) for h in heads]
    for step in range(30):
        x, y = torch.randn(n, 100, in_dim, generator=gen) * 3, torch.randint(0, classes, (100,), generator=gen)
        logits = stacked.forward(x, train=True)  # (n, 100, C)
        loss = (
            torch.nn.functional.cross_entropy(logits.reshape(-1, classes), y.repeat(n), reduction="none")
            .view(n, -1)
            .mean(dim=1)
            .sum()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for i, (h, own_opt) in enumerate(zip(heads, own_opts, strict=True)):
            own = h.train()(x[i])
            assert torch.equal(logits[i], own), f"step {step} head {i} logits"
            own_opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(own, y).backward()
            own_opt.step()
    for i, h in enumerate(heads):
        expect = [lin.weight for lin in h.linears] + [lin.bias for lin in h.linears]
        for k, (got, want) in enumerate(zip(stacked.snapshot(i), expect, strict=True)):
            assert torch.equal(got.reshape(want.shape), want.detach()), f"head {i} tensor {k}"


def test_layer_subset_and_negative_indices(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=60, n_test=30, hidden=4, num_layers=5)
    scores = sweep_layers(m.train_dir, m.test_dir, _cfg(**{"train.max_epochs": 2}), layers=[-1, 2])
    assert [s.layer for s in scores] == [5, 2]
    assert all(0 <= s.test_acc <= 1 and s.epochs == 2 for s in scores)


def test_no_dropout_no_patience(tmp_path: Path) -> None:
    m = make_model(tmp_path, n_train=60, n_test=30, hidden=4, num_layers=1)
    cfg = _cfg(**{"train.max_epochs": 3, "train.patience": 0, "train.dropout": 0.0, "train.hidden_dims": ()})
    scores = sweep_layers(m.train_dir, m.test_dir, cfg)
    assert [s.epochs for s in scores] == [3, 3]
    _assert_agree(scores, cfg, m)


@pytest.mark.integration
@pytest.mark.slow
def test_sweep_agrees_with_fits_on_real_minilm_features(shared_dir: Path, tmp_path: Path) -> None:
    """Real features: 600 MR texts per split through minilm-l3; per-layer test accuracy within 0.5 points."""
    from extractors.run import extract_all
    from lightning_modules.datamodule import resolve_selection

    cfg = load_config(
        env={},
        **{
            "paths.data_dir": str(shared_dir / "data"),
            "paths.models_dir": str(shared_dir / "models"),
            "paths.cache_dir": str(tmp_path),
            "extract.models": ("minilm-l3",),
            "extract.dataset": "mr",
            "extract.limit": 600,
            "extract.show_progress": False,
        },
    )
    extract_all(cfg)
    sel = resolve_selection(cfg, "minilm-l3", -1)
    scores = sweep_layers(sel.train_dir, sel.test_dir, cfg)
    assert len(scores) == 4 and max(s.test_acc for s in scores) > 0.6
    with torch_threads(1):
        for s in scores:
            r = reference_fit(cfg, [resolve_selection(cfg, "minilm-l3", s.layer)])
            assert abs(s.test_acc - r.test_acc) <= 0.005, (s, r)
            assert abs(s.val_acc - r.val_acc) <= 0.005, (s, r)


def test_folds_and_seeds_join_the_layers_each_head_equal_to_its_own_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 folds x 2 seeds x 2 layers in one sweep; every head equals the reference fit of its fold, seed and layer.

    95 rows: folds of 63, 63 and 64 training rows, so two stacks (equal batch shapes in each), one Trainer.
    """
    from lightning_modules.folds import units

    m = make_model(tmp_path, n_train=95, n_test=40, hidden=6, num_layers=1, num_classes=2, signal=1.2)
    cfg = _cfg(**{"data.cv_folds": 3, "train.max_epochs": 6})
    built: list[int] = []
    init = batched.BatchedHeads.__init__

    def spy(self: batched.BatchedHeads, heads: list[Any], device: torch.device) -> None:
        built.append(len(heads))
        init(self, heads, device)

    monkeypatch.setattr(batched.BatchedHeads, "__init__", spy)
    per_unit = sweep_units(m.train_dir, m.test_dir, cfg, seeds=2)
    assert sorted(built) == [4, 8]  # (1 fold x 2 seeds | 2 folds x 2 seeds) x 2 layers
    assert len(per_unit) == 6 and all([s.layer for s in scores] == [0, 1] for scores in per_unit)
    all_units = units(3, 2)
    for u in (1, 2, 5):  # both stacks, both seeds, every fold (each of 12 checked: 30 s on a busy machine)
        unit, s = all_units[u], per_unit[u][1]
        with torch_threads(1):
            r = reference_fit(cfg, [m.select(1)], fold=unit.fold, seed_offset=unit.seed)
        assert (s.best_epoch, s.epochs) == (r.best_epoch, r.epochs), unit
        assert s.val_loss == pytest.approx(r.val_loss, abs=LOSS_TOL), unit
        assert (s.val_acc, s.test_acc) == pytest.approx((r.val_acc, r.test_acc), abs=1e-6), unit
        assert np.array_equal(s.val_pred, r.val_pred) and np.array_equal(s.val_rows, r.val_rows), unit
    assert len({scores[1].val_acc for scores in per_unit}) > 1  # the units differ


@pytest.mark.parametrize(("fusion", "layers"), [("concat", ("1", "mean:last2")), ("moe", ("2", "1"))])
def test_every_unit_of_a_fit_trains_in_one_batched_model_equal_to_its_own_fit(
    tmp_path: Path, fusion: str, layers: tuple[str, str]
) -> None:
    """Units (3 folds x 2 seeds) train at once; each equals its reference fit (best epoch, val loss to 1e-5, test)."""
    from lightning_modules.folds import units

    a = make_model(tmp_path, "a", n_train=95, n_test=40, hidden=8, num_layers=2, signal=1.2)
    b = make_model(tmp_path, "b", n_train=95, n_test=40, hidden=12, num_layers=2, signal=1.2)
    cfg = _cfg(**{"data.cv_folds": 3, "train.max_epochs": 6, "train.fusion": fusion, "train.proj_dim": 16})
    selections = [a.select(layers[0]), b.select(layers[1])]
    all_units = units(3, 2)
    got = fit_units(cfg, selections, all_units)
    for u in (0, 3, 4):  # both stacks (folds of 63 and 64 rows), both seeds
        unit, g = all_units[u], got[u]
        with torch_threads(1):
            r = reference_fit(cfg, selections, fold=unit.fold, seed_offset=unit.seed)
        params = sum(p.numel() for p in r.net.parameters())
        assert (g.best_epoch, g.epochs, g.params, g.fused_dim) == (r.best_epoch, r.epochs, params, r.net.fused_dim)
        assert g.val_loss == pytest.approx(r.val_loss, abs=LOSS_TOL) and g.val_acc == pytest.approx(r.val_acc, abs=1e-6)
        assert g.test_acc == pytest.approx(r.test_acc, abs=1e-6) and np.array_equal(g.test_pred, r.test_pred)
        assert np.array_equal(g.val_pred, r.val_pred) and np.array_equal(g.val_rows, r.val_rows)
        assert g.val_rows.dtype == g.val_pred.dtype == np.int64 and len(g.val_rows) in (31, 32)  # its fold's rows
    assert sorted(np.concatenate([got[u].val_rows for u in (0, 2, 4)]).tolist()) == list(range(95))  # folds cover train


def test_refit_seeds_train_at_once_each_equal_to_its_own_fit_on_all_rows(tmp_path: Path) -> None:
    """``fit_all_rows``: seeds at once for a fixed number of epochs on every row; each equals a lone fit of its seed."""
    m = make_model(tmp_path, n_train=80, n_test=40, hidden=8, num_layers=1, signal=1.2)
    cfg = _cfg(**{"train.max_epochs": 4})
    fits = fit_all_rows(cfg, [m.select(-1)], epochs=3, seeds=2)
    assert [f.epochs for f in fits] == [3, 3] and [f.train_rows for f in fits] == [80, 80]
    assert [len(f.curves["train/loss"]) for f in fits] == [3, 3] and "val/loss" not in fits[0].curves
    for k, f in enumerate(fits):
        alone = fit_all_rows(with_values(cfg, {"train.seed": cfg.train.seed + k}), [m.select(-1)], epochs=3)[0]
        assert f.test_acc == alone.test_acc and np.array_equal(f.test_pred, alone.test_pred)
        assert all(torch.equal(f.state[name], alone.state[name]) for name in f.state), k
        assert f.net["seed"] == cfg.train.seed + k
    assert not np.array_equal(fits[0].state["head.linears.0.weight"], fits[1].state["head.linears.0.weight"])


def test_layer_scores_keep_validation_predictions_and_curves_through_the_sweep_store(tmp_path: Path) -> None:
    import json

    m = make_model(tmp_path, n_train=60, n_test=30, hidden=4, num_layers=1)
    (score, _) = sweep_layers(m.train_dir, m.test_dir, _cfg(**{"train.max_epochs": 2}))
    back = LayerScore.from_json(json.loads(json.dumps(score.to_json())))
    assert back == score and back.curves == score.curves and len(back.curves["val/acc"]) == 2
    assert back.val_pred.dtype == back.val_rows.dtype == np.int64 and len(back.val_rows) == 6  # 10% of 60 rows
    assert np.array_equal(back.val_pred, score.val_pred) and np.array_equal(back.val_rows, score.val_rows)


def test_a_sweep_trial_logs_its_chosen_layers_curves_and_the_mean_over_layers() -> None:
    from studies.trials.objective import sweep_curves

    def score(layer: int, val: list[float]) -> LayerScore:
        curves = {"train/loss": val, "val/loss": val, "val/acc": [1 - v for v in val]}
        return LayerScore(0.5, 0.5, min(val), 0.5, 0.5, 0, len(val), layer=layer, curves=curves)

    scores = [[score(0, [0.9, 0.8]), score(1, [0.7, 0.6, 0.5])], [score(0, [0.8]), score(1, [0.5, 0.4])]]
    got = sweep_curves(scores, best=1)
    assert got["val/loss"] == pytest.approx({0: 0.6, 1: 0.5, 2: 0.5})  # layer 1, mean over the units that trained
    assert got["val/loss.unit0"] == {0: 0.7, 1: 0.6, 2: 0.5} and got["val/loss.unit1"] == {0: 0.5, 1: 0.4}
    assert got["val/loss.layers_mean"] == pytest.approx(
        {0: (0.9 + 0.7 + 0.8 + 0.5) / 4, 1: (0.8 + 0.6 + 0.4) / 3, 2: 0.5}
    )
    assert got["val/acc"] == pytest.approx({0: 0.4, 1: 0.5, 2: 0.5})
    assert not [k for k in got if "unit2" in k or "layer0" in k]  # only the chosen layer's units, no per-layer series
