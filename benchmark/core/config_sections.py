"""The config's sections: what each holds, its defaults and help, and the checks each value must pass.

``BenchConfig`` composes them and ``load_config`` fills them in order (``benchmark.core.config``).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from benchmark.core.errors import UserError
from benchmark.core.registry import suggest

DTYPES = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
OVERWRITE = ("missing", "always", "never")
MONITORS = ("val/loss", "val/acc")
SELECTION_RULES = ("argmax", "one-se")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")  # train.accelerator: what Lightning's Trainer accepts here
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")  # train.precision: Lightning precision plugins
CV_SMALL_CLASSES = ("refuse", "spread")  # data.cv_small_classes; the rule itself is lightning_modules.folds


class ConfigError(UserError, ValueError):
    """A bad config key or value."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{key}={value!r} is not valid.{suggest(value, list(choices))} Choose one of: {', '.join(choices)}"
        )


def _check_unique(key: str, values: tuple[str, ...]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"{key} names {', '.join(map(repr, repeated))} more than once: list each once")


def _check_positive(key: str, value: float | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        ConfigError: naming the value and the expected form.
    """
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(f"extract.shard={text!r} is not valid: use I/N with 0 <= I < N, e.g. 0/4 for the first of 4")
    return i, n


@dataclass(frozen=True, slots=True)
class PathsConfig:
    """Where inputs and outputs live."""

    data_dir: str = field(
        default="../shared/data", metadata=_help("folder with <dataset>/{train,test}.csv (env LAYERFUSE_DATA_DIR)")
    )
    models_dir: str = field(
        default="../shared/models", metadata=_help("folder holding the embedded models (env LAYERFUSE_MODELS_DIR)")
    )
    cache_dir: str = field(
        default=".cache/features", metadata=_help("per-layer feature cache (env LAYERFUSE_CACHE_DIR)")
    )


@dataclass(frozen=True, slots=True)
class ExtractConfig:
    """How features are extracted."""

    models: tuple[str, ...] = field(
        default=("smollm2-135m", "minilm-l6"), metadata=_help("model aliases, hub ids or local dirs")
    )
    dataset: str = field(default="mr", metadata=_help("dataset name, local file, or hub id"))
    splits: tuple[str, ...] = field(default=("train", "test"), metadata=_help("splits to extract"))
    limit: int | None = field(
        default=None, metadata=_help("keep a seeded random subset of N rows per split (original order kept)")
    )
    max_length: int | None = field(default=None, metadata=_help("max tokens per text; default: the model's own"))
    pooling: str | None = field(default=None, metadata=_help("mean|last_token|cls|max; default: the model's own"))
    dtype: str = field(default="auto", metadata=_help("auto|fp32|bf16|fp16 (auto: bf16 where the hardware has it)"))
    batch_size: int = field(default=0, metadata=_help("texts per batch; 0 = auto (token budget, OOM back-off on CUDA)"))
    token_budget: int = field(
        default=0,
        metadata=_help("padded tokens per batch when batch_size is auto; 0 = per device (cpu 2048, cuda 65536)"),
    )
    device: str = field(default="auto", metadata=_help("auto|cpu|cuda"))
    overwrite: str = field(
        default="missing", metadata=_help("missing: reuse complete caches; always: redo; never: fail if absent")
    )
    chunk_size: int = field(default=1024, metadata=_help("texts per resumable chunk"))
    shard: str | None = field(
        default=None,
        metadata=_help(
            "I/N: compute chunks I, I+N, ... only (job arrays); the last shard to finish completes the cache"
        ),
    )
    trust_remote_code: bool = field(default=False, metadata=_help("allow model code from the hub (off by default)"))
    show_progress: bool = field(default=True, metadata=_help("progress bar per model x split"))

    def __post_init__(self) -> None:
        _check_choice("extract.dtype", self.dtype, DTYPES)
        _check_choice("extract.device", self.device, DEVICES)
        _check_choice("extract.overwrite", self.overwrite, OVERWRITE)
        _check_positive("extract.limit", self.limit)
        _check_positive("extract.max_length", self.max_length)
        _check_positive("extract.batch_size", self.batch_size, allow_zero=True)
        _check_positive("extract.token_budget", self.token_budget, allow_zero=True)
        _check_positive("extract.chunk_size", self.chunk_size)
        if self.shard is not None:
            parse_shard(self.shard)
            if self.overwrite == "always":
                raise ConfigError(
                    "extract.shard with extract.overwrite=always would let each shard delete the chunks of the others; "
                    "run `layerfuse extract --overwrite always` once without --shard, or delete the cache folder first"
                )
        if not self.models:
            raise ConfigError("extract.models is empty: name at least one model (see `layerfuse ls models`)")
        if not self.splits:
            raise ConfigError("extract.splits is empty: use e.g. --split train,test")
        _check_unique("extract.models", self.models)
        _check_unique("extract.splits", self.splits)


@dataclass(frozen=True, slots=True)
class DataConfig:
    """How texts and labels are read, and how train is split for model selection."""

    text_column: str = field(default="text", metadata=_help("text column of local files / hub datasets"))
    label_column: str = field(default="label", metadata=_help("label column of local files / hub datasets"))
    hf_config: str | None = field(default=None, metadata=_help("hub dataset configuration name"))
    encoding: str = field(
        default="utf-8",
        metadata=_help("encoding of local CSV and JSON files (utf-8 also reads a byte-order mark), e.g. latin-1"),
    )
    val_fraction: float = field(default=0.1, metadata=_help("stratified share of train held out for validation"))
    standardize: bool = field(default=True, metadata=_help("standardise features with train-part statistics"))
    num_workers: int = field(default=0, metadata=_help("DataLoader workers"))
    val_split: str | None = field(
        default=None,
        metadata=_help("the dataset's own validation split (extract it too); None = hold out val_fraction of train"),
    )
    split_seed: int = field(
        default=0,
        metadata=_help(
            "seed of the train/validation split (fixed across train.seed, so every trial validates on the same rows)"
        ),
    )
    cv_folds: int = field(
        default=0,
        metadata=_help(
            "k >= 2: score every candidate on k stratified folds of train (seeded by split_seed, the same for every "
            "model and preset of a dataset); 0 (or 1) = one val_fraction split"
        ),
    )
    cv_small_classes: str = field(
        default="refuse",
        metadata=_help(
            "classes with fewer than cv_folds training rows: refuse (an error) or spread (their rows are validated "
            "in different folds, the class's other rows train; a class with one row always trains, never validates)"
        ),
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} must be between 0 and 1 (exclusive), e.g. 0.1")
        _check_positive("data.num_workers", self.num_workers, allow_zero=True)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(
                f"data.encoding={self.encoding!r} is not a known encoding: use e.g. utf-8, latin-1 or cp1252"
            ) from None
        if self.val_split in ("train", "test"):
            raise ConfigError(
                f"data.val_split={self.val_split!r} would validate on the {self.val_split} split: name a separate "
                "split (e.g. validation) or leave it unset"
            )
        if self.cv_folds < 0:
            raise ConfigError(
                f"data.cv_folds={self.cv_folds} is negative: use 0 (one validation split) or k >= 2 folds, at most the "
                "smallest class's training count (see data.cv_small_classes)"
            )
        _check_choice("data.cv_small_classes", self.cv_small_classes, CV_SMALL_CLASSES)
        if self.cv_folds == 1:  # one fold would validate on all of train: the single split is what it means
            object.__setattr__(self, "cv_folds", 0)
        if self.cv_folds and self.val_split:
            raise ConfigError(
                f"data.cv_folds={self.cv_folds} folds train, but data.val_split={self.val_split!r} names a fixed "
                "validation split: set one of them (data.cv_folds=0 to validate on the split)"
            )


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """The classifier head and its optimisation (paper defaults: Adam, lr 1e-4, batch 100, 120 epochs)."""

    seed: int = field(default=0, metadata=_help("global seed"))
    lr: float = field(default=1e-4, metadata=_help("Adam learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("Adam weight decay"))
    batch_size: int = field(default=100, metadata=_help("training batch size"))
    max_epochs: int = field(default=120, metadata=_help("maximum epochs"))
    patience: int = field(default=10, metadata=_help("early-stopping patience in epochs (0 = off)"))
    hidden_dims: tuple[int, ...] = field(default=(256,), metadata=_help("MLP head hidden sizes"))
    dropout: float = field(default=0.1, metadata=_help("MLP head dropout"))
    proj_dim: int = field(default=1024, metadata=_help("common projection size d (0 = smallest input size)"))
    fusion: str = field(default="concat", metadata=_help("fusion name (see `layerfuse ls fusions`)"))
    accelerator: str = field(
        default="cpu", metadata=_help("Lightning accelerator that trains every head: cpu|gpu|cuda|mps|auto")
    )
    precision: str = field(
        default="32-true",
        metadata=_help("Lightning precision: 32-true, or bf16-mixed / 16-mixed where the accelerator supports it"),
    )
    monitor: str = field(
        default="val/loss", metadata=_help("early stopping and best-epoch metric: val/loss or val/acc")
    )
    moe_experts: int = field(default=0, metadata=_help("moe fusion experts (0 = one expert per input)"))
    threads: int = field(default=1, metadata=_help("torch CPU threads while training heads (0 = torch's default)"))

    def __post_init__(self) -> None:
        _check_choice("train.monitor", self.monitor, MONITORS)
        _check_choice("train.accelerator", self.accelerator, ACCELERATORS)
        _check_choice("train.precision", self.precision, PRECISIONS)
        _check_positive("train.moe_experts", self.moe_experts, allow_zero=True)
        _check_positive("train.threads", self.threads, allow_zero=True)
        _check_positive("train.lr", self.lr)
        _check_positive("train.batch_size", self.batch_size)
        _check_positive("train.max_epochs", self.max_epochs)
        _check_positive("train.patience", self.patience, allow_zero=True)
        _check_positive("train.proj_dim", self.proj_dim, allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"train.dropout={self.dropout} must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class StudyConfig:
    """Optuna study settings."""

    preset: str = field(default="search", metadata=_help("study preset (see `layerfuse ls presets`)"))
    name: str | None = field(default=None, metadata=_help("study name; default: <preset>-<dataset>-<model+model>"))
    trials: int = field(
        default=20, metadata=_help("finished (complete or pruned) trials to reach; grid presets run their whole grid")
    )
    storage: str = field(
        default="sqlite:///mlruns/optuna.db",
        metadata=_help("Optuna storage: sqlite:///f.db, postgresql://..., or journal:f.log"),
    )
    workers: int = field(default=1, metadata=_help("worker processes on this machine"))
    timeout: float | None = field(default=None, metadata=_help("stop starting trials after this many seconds"))
    pruning: bool = field(default=True, metadata=_help("prune unpromising trials while they train (with study.pruner)"))
    pruner: str = field(
        default="median",
        metadata=_help(
            "median (below the median of completed trials at the same epoch; grids: of the same pair or model) or "
            "threshold:X (val/acc below X); from epoch 5"
        ),
    )
    seeds: int = field(default=1, metadata=_help("seeds per configuration (metrics are their mean)"))
    heartbeat: float = field(
        default=10.0,
        metadata=_help("seconds between trial heartbeats; a trial silent for 3 beats is failed and retried"),
    )
    fusions: tuple[str, ...] = field(
        default=(), metadata=_help("fusions the fusion-methods and search presets choose from (empty = all)")
    )
    max_k: int = field(default=10, metadata=_help("largest k of last-k aggregations (paper: 10)"))
    refit: bool = field(
        default=True,
        metadata=_help(
            "when the study finishes, refit its chosen trial on all training rows (per seed); its test accuracy is "
            "the study's result"
        ),
    )
    race: bool = field(
        default=True,
        metadata=_help(
            "layer sweeps: a ridge probe drops clearly worse layers before training, and the rest race fold by fold "
            "(false: every layer trains on every unit)"
        ),
    )
    race_burn_in: int = field(default=1, metadata=_help("folds every surviving layer trains before the race drops any"))
    race_z: float = field(
        default=2.0, metadata=_help("the race drops a layer this many calibrated SEs behind the leader")
    )
    probe_z: float = field(
        default=3.0, metadata=_help("the probe drops a layer this many paired SEs (plus probe_margin) below its best")
    )
    probe_margin: float = field(
        default=0.02, metadata=_help("accuracy a layer's probe may trail the probe's best by and still train")
    )

    def __post_init__(self) -> None:
        _check_positive("study.trials", self.trials)
        _check_positive("study.workers", self.workers)
        _check_positive("study.timeout", self.timeout)
        _check_positive("study.seeds", self.seeds)
        _check_positive("study.heartbeat", self.heartbeat)
        _check_positive("study.max_k", self.max_k)
        _check_positive("study.race_burn_in", self.race_burn_in)
        for name in ("race_z", "probe_z", "probe_margin"):
            _check_positive(f"study.{name}", getattr(self, name), allow_zero=True)
        _check_unique("study.fusions", self.fusions)
        kind, _, value = self.pruner.partition(":")
        if not (self.pruner == "median" or (kind == "threshold" and value.replace(".", "", 1).isdigit())):
            raise ConfigError(
                f"study.pruner={self.pruner!r} is not valid: use median or threshold:X (e.g. threshold:0.6)"
            )


@dataclass(frozen=True, slots=True)
class SelectionConfig:
    """How a choice among validation-scored candidates is made (the study summary, fused layers, reports)."""

    rule: str = field(
        default="argmax",
        metadata=_help(
            "argmax: the highest mean validation accuracy; one-se: the cheapest candidate (fewest models, then "
            "smallest fused width / feature bytes, then shallowest layer) within one standard error of the best"
        ),
    )

    def __post_init__(self) -> None:
        _check_choice("selection.rule", self.rule, SELECTION_RULES)


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """MLflow tracking."""

    uri: str = field(
        default="sqlite:///mlruns/mlflow.db", metadata=_help("MLflow tracking URI (env MLFLOW_TRACKING_URI)")
    )
    artifact_root: str = field(default="mlruns/artifacts", metadata=_help("artifact location for new experiments"))
    system_metrics: bool = field(
        default=True, metadata=_help("log MLflow system metrics (CPU, memory, RSS, GPU) on extract and study runs")
    )
    system_metrics_interval: float = field(
        default=10.0, metadata=_help("seconds between system-metric samples (one costs ~7 ms of CPU)")
    )
    system_metrics_node: str = field(
        default="",
        metadata=_help(
            "this host's name in system metrics (system/<node>/*), for a study several hosts run (MLflow's node_id)"
        ),
    )

    def __post_init__(self) -> None:
        _check_positive("tracking.system_metrics_interval", self.system_metrics_interval)


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """Report export."""

    out_dir: str = field(default="reports", metadata=_help("report output folder"))
    formats: tuple[str, ...] = field(default=("md", "html"), metadata=_help("md and/or html"))


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The multi-stage runs (``layerfuse reproduce``, ``quickstart``): datasets x study presets, then one report."""

    datasets: tuple[str, ...] = field(
        default=("sst2", "mr", "r8", "r52"), metadata=_help("datasets, each run through every stage")
    )
    presets: tuple[str, ...] = field(
        default=("tfidf-baseline", "layer-sweep", "last-k", "fusion-methods", "multi-model", "search"),
        metadata=_help("study presets in order (those needing more models than given are skipped)"),
    )
    report_name: str = field(default="reproduce", metadata=_help("report folder under report.out_dir"))

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("pipeline.datasets is empty: name at least one, e.g. --datasets mr")
        if not self.presets:
            raise ConfigError("pipeline.presets is empty: name at least one, e.g. --set pipeline.presets=layer-sweep")
        _check_unique("pipeline.datasets", self.datasets)
        _check_unique("pipeline.presets", self.presets)
