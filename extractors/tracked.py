"""One MLflow run per extraction (tag ``layerfuse.run_kind=extract``), so ``layerfuse extract`` is tracked too.

A run covers one model x split that needed work (cache hits have none): params (model, source, dataset, split,
pooling, max length, dtype, device), the split as a dataset input, the cache key as tag ``layerfuse.cache_key``,
the ``perf/*`` figures of its ``meta.json`` (seconds, tokens, tokens/s, ms/sample, model load, peak memory) and
MLflow system metrics while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache, is_complete
from benchmark.core.config import BenchConfig
from benchmark.core.keys import ResolvedFeatures
from benchmark.core.run_inputs import dataset_input, log_inputs, split_dataset
from benchmark.core.text_data import dataset_label

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

CONTEXTS = {"train": tracking.CONTEXT_TRAIN, "test": tracking.CONTEXT_TEST}  # any other split validates


class ExtractTracker:
    """Opens the runs of one ``extract_all`` call; the store and experiment are set up at the first run.

    Args:
        cfg: The extraction's config (``tracking`` names the store).
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._where: tuple[MlflowClient, str] | None = None

    def _store(self) -> tuple[MlflowClient, str]:
        if self._where is None:
            cfg = self.cfg
            mlc = tracking.client(cfg.tracking)
            self._where = (
                mlc,
                tracking.ensure_experiment(mlc, tracking.experiment_name(cfg.extract.dataset), cfg.tracking),
            )
        return self._where

    def close_dead(self) -> int:
        """Close extract runs that killed processes left RUNNING (also when this call extracted nothing).

        A call whose caches were all complete opens no run of its own; it still closes those of an extraction that
        was killed after its cache was complete. A store that does not exist yet is not created for this.
        """
        uri = self.cfg.tracking.uri
        if self._where is None and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            return 0
        mlc, experiment_id = self._store()
        return tracking.close_dead_runs(mlc, experiment_id, tracking.KIND_EXTRACT)

    @contextmanager
    def run(self, rf: ResolvedFeatures) -> Iterator[str]:
        """The run of extracting ``rf`` (FAILED with the error when the block raises); yields its id."""
        cfg = self.cfg
        mlc, experiment_id = self._store()
        split = rf.split.split
        tags = {tracking.TAG_CACHE_KEY: rf.key.relpath().as_posix()}
        with tracking.tracked_run(
            mlc,
            experiment_id,
            f"extract {rf.spec.alias} {split}",
            tracking.KIND_EXTRACT,
            cfg.tracking,
            tags,
            with_system_metrics=True,
        ) as run_id:
            params = {
                "model": rf.spec.alias,
                "model_source": rf.spec.hf_id,
                "dataset": dataset_label(cfg.extract.dataset),
                "split": split,
                "limit": cfg.extract.limit,
                "pooling": rf.key.pooling,
                "max_length": rf.key.max_length,
                "dtype": rf.key.dtype,
                "device": rf.device,
            }
            tracking.log_run_data(mlc, run_id, params=params)
            name = dataset_label(cfg.extract.dataset)
            context = CONTEXTS.get(split, tracking.CONTEXT_VALIDATION)
            log_inputs(mlc, run_id, [dataset_input(split_dataset(rf.split, name), context)])
            yield run_id
            if not is_complete(rf.path):  # a shard whose cache other shards still finish: no totals yet
                return
            meta = FeatureCache(rf.path).meta
            metrics = {
                metric: float(meta[field]) for field, metric in tracking.EXTRACT_METRICS.items() if field in meta
            }
            tracking.log_run_data(mlc, run_id, metrics=metrics)
