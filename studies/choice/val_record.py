"""What a trial run records for the calibrated tie sets and the ``one-se`` cost, and how it is read back.

Per trial: its units' validation predictions (``studies.choice.row_se.ValRows``) as one compact ``.npz`` artifact
(``cv/val_pred.npz``; a layer sweep: ``cv/sweep_val_pred.npz``, one prediction row per layer), and its computed
``perf/infer_gflops_per_text`` (``studies.trials.flops``) with the measured ``perf/infer_ms_per_text`` (extraction of
the whole model plus the head; an upper bound for a configuration that reads a shallow layer).
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from benchmark.core.config import BenchConfig
from benchmark.core.models import resolve_model
from benchmark.core.study_data import ModelDirs, StudyData
from benchmark.core.tracking import PERF_INFER_GFLOPS, PERF_INFER_MS, ROWS_ARTIFACT, SWEEP_ROWS_ARTIFACT
from studies.choice.row_se import ValRows, val_rows
from studies.trials.flops import infer_gflops, mean_tokens, sparse_flops

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def unit_val_rows(d: ModelDirs, results: Sequence[Any]) -> ValRows | None:
    """``ValRows`` of a configuration's units (``FitResult`` / ``LayerScore`` with ``val_pred`` and ``val_rows``).

    The rows index the train cache (the dataset's own validation cache when it has one), whose labels are read.
    """
    if not all(np.size(getattr(r, "val_pred", ())) for r in results):
        return None  # units from before per-row predictions
    cache = d.val if d.val is not None else d.train
    n_train = len(np.load(d.train / "labels.npy", mmap_mode="r"))
    return results_rows(results, np.load(cache / "labels.npy", mmap_mode="r"), n_train, d.val is not None)


def results_rows(results: Sequence[Any], labels: np.ndarray, n_train: int, own_val: bool) -> ValRows | None:
    """``unit_val_rows`` given the labels the rows index and the train split's size (``own_val``: a separate split)."""
    preds = [np.asarray(getattr(r, "val_pred", np.empty(0)), dtype=np.int64) for r in results]
    rows = [np.asarray(getattr(r, "val_rows", np.empty(0)), dtype=np.int64) for r in results]
    return val_rows(preds, rows, labels, [n_train - (0 if own_val else r.size) for r in rows])


def _log_bytes(mlc: MlflowClient, run_id: str, blob: bytes, artifact_file: str) -> None:
    path = Path(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / path.name).write_bytes(blob)
        mlc.log_artifact(run_id, str(Path(tmp) / path.name), str(path.parent))


def log_trial_rows(mlc: MlflowClient, run_id: str, rows: ValRows | None) -> None:
    """Store a trial's per-unit validation predictions (nothing when its units carry none)."""
    if rows is not None:
        _log_bytes(mlc, run_id, rows.to_bytes(), ROWS_ARTIFACT)


def log_sweep_rows(mlc: MlflowClient, run_id: str, d: ModelDirs, scores: Sequence[Sequence[Any]]) -> None:
    """Store a sweep's validation predictions: ``scores[u][i]`` is unit u's head on layer i (one npz, all layers).

    A layer stopped early by the probe or the race (``studies.trials.racing``) has no predictions on some units: its row
    is -1 and ``complete`` marks it false. Nothing is stored when no layer, or a layer that trained on every unit,
    lacks them (heads from before per-row predictions).
    """
    got = [unit_val_rows(d, [unit[i] for unit in scores]) for i in range(len(scores[0]))]
    trained = [all(unit[i].epochs > 0 for unit in scores) for i in range(len(scores[0]))]
    per_layer = [r for r in got if r is not None]
    if not per_layer or any(t and r is None for t, r in zip(trained, got, strict=True)):
        return
    first = per_layer[0]
    missing = np.full_like(first.pred, -1)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        rows=first.rows.astype(np.int32),
        pred=np.stack([missing if r is None else r.pred for r in got]).astype(np.int16),
        label=first.label.astype(np.int16),
        sizes=first.sizes,
        ratio=np.float64(first.ratio),
        complete=np.array([r is not None for r in got]),
    )
    _log_bytes(mlc, run_id, buf.getvalue(), SWEEP_ROWS_ARTIFACT)


def sweep_records(
    mlc: MlflowClient,
    run_id: str,
    cfg: BenchConfig,
    d: ModelDirs,
    model: str,
    scores: Sequence[Sequence[Any]],
    chosen: int,
    perf: Mapping[str, float],
) -> None:
    """Log a layer sweep's validation predictions, each layer's GFLOPs (history) and the chosen layer's costs."""
    log_sweep_rows(mlc, run_id, d, scores)
    params = float(perf[tracking.PERF_PARAM_COUNT])
    per_layer = {int(s.layer): gflops(cfg, {model: d}, {model: str(s.layer)}, params) for s in scores[0]}
    extract_ms = float(FeatureCache(d.train).meta.get("extract_ms_per_sample", 0.0))
    metrics = cost_metrics(
        cfg, {model: d}, {model: str(chosen)}, params, extract_ms, float(perf[tracking.PERF_HEAD_MS_PER_SAMPLE])
    )
    tracking.log_run_data(mlc, run_id, metrics=metrics, histories={tracking.SWEEP_GFLOPS: per_layer})


def read_sweep_rows(blob: bytes | None) -> list[ValRows | None] | None:
    """Per layer, the ``ValRows`` of a sweep's artifact (None for a layer stopped early; None when absent)."""
    if blob is None:
        return None
    z = np.load(io.BytesIO(blob))
    common = {k: np.asarray(z[k], dtype=np.int64) for k in ("rows", "label", "sizes")}
    complete = z["complete"] if "complete" in z.files else np.ones(len(z["pred"]), dtype=bool)
    return [
        ValRows(common["rows"], np.asarray(p, dtype=np.int64), common["label"], common["sizes"], float(z["ratio"]))
        if ok
        else None
        for p, ok in zip(z["pred"], complete, strict=True)
    ]


def read_rows(blob: bytes | None) -> ValRows | None:
    """A trial's ``ValRows`` from its artifact bytes (None when absent)."""
    return None if blob is None else ValRows.from_bytes(blob)


def gflops(cfg: BenchConfig, dirs: Mapping[str, ModelDirs], layers: Mapping[str, str], head_params: float) -> float:
    """``perf/infer_gflops_per_text`` of a configuration of cached models (see ``studies.trials.flops``)."""
    specs, tokens = {}, {}
    for model in layers:
        meta = FeatureCache(dirs[model].train).meta
        spec = resolve_model(model, cfg.paths.models_dir)
        if not spec.num_layers or not spec.hidden_size:  # an unregistered hub model: its cache knows its shape
            spec = replace(spec, num_layers=int(meta.get("num_layers", 0)), hidden_size=int(meta.get("hidden_size", 0)))
        specs[model], tokens[model] = spec, mean_tokens(meta)
    return infer_gflops(layers, specs, tokens, head_params)


def trial_records(
    mlc: MlflowClient,
    run_id: str,
    cfg: BenchConfig,
    data: StudyData,
    layers: Mapping[str, str],
    results: Sequence[Any],
    extract_ms: float,
) -> dict[str, float]:
    """Log a trial's per-row validation predictions; return its cost metrics (``cost_metrics``).

    A configuration of cached models reads the first model's cache for labels; the lexical baseline (no models)
    the texts of the train (or validation) split. Its cost is the TF-IDF row times the linear classifier.
    """
    head_ms = float(np.mean([r.head_ms_per_sample for r in results]))
    dirs = data.dirs
    if layers:
        log_trial_rows(mlc, run_id, unit_val_rows(dirs[next(iter(layers))], results))
        return cost_metrics(cfg, dirs, layers, float(results[0].params), extract_ms, head_ms)
    from extractors.tfidf import words

    train = data.train
    val = data.val or train
    log_trial_rows(mlc, run_id, results_rows(results, val.labels, len(train.labels), data.val is not None))
    per_text = float(np.mean([len(words(t)) for t in train.texts]))
    classes = int(max(train.labels.max() + 1, 2))
    out = {PERF_INFER_GFLOPS: sparse_flops(per_text, classes if classes > 2 else 1) / 1e9}
    if extract_ms > 0:
        out[PERF_INFER_MS] = extract_ms + head_ms
    return out


def cost_metrics(
    cfg: BenchConfig,
    dirs: Mapping[str, ModelDirs],
    layers: Mapping[str, str],
    head_params: float,
    extract_ms: float,
    head_ms: float,
) -> dict[str, float]:
    """``perf/infer_gflops_per_text`` and, where both parts were measured, ``perf/infer_ms_per_text``."""
    out = {PERF_INFER_GFLOPS: gflops(cfg, dirs, layers, head_params)}
    if math.isfinite(extract_ms) and math.isfinite(head_ms) and extract_ms > 0:
        out[PERF_INFER_MS] = extract_ms + head_ms
    return out


def client_blob(mlc: MlflowClient, run_id: str, artifact: str) -> bytes | None:
    """The bytes of a run's artifact file through the MLflow client, or None when the run has none."""
    from mlflow.exceptions import MlflowException

    folder = str(Path(artifact).parent)
    try:
        if artifact not in {a.path for a in mlc.list_artifacts(run_id, None if folder == "." else folder)}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(mlc.download_artifacts(run_id, artifact, tmp)).read_bytes()
    except (MlflowException, OSError):
        return None
