"""A tiny finished study whose chosen trial fuses two tiny models, one at a middle layer (for refit and export)."""

from __future__ import annotations

from pathlib import Path

import optuna

from benchmark.core.config import BenchConfig, load_config
from extractors.run import extract_all
from studies.run.runner import run_study

STUDY = "export-toy"


def tiny_study(tiny_models: dict[str, Path], root: Path) -> BenchConfig:
    """Extract a 60/30 toy dataset with a tiny Llama (3 layers), BERT (2 layers) and TF-IDF, run one enqueued trial.

    The search trial fuses ``mean:1,2`` of the Llama (its layer 3 is never needed), the BERT's last layer and the
    TF-IDF features by ``sum``, trained for 2 seeds.
    """
    from conftest import write_dataset

    data = write_dataset(root / "data", n_train=60, n_test=30)
    llama, bert = str(tiny_models["llama-left"]), str(tiny_models["bert-a"])
    cfg = load_config(
        env={},
        **{
            "paths.cache_dir": str(root / "cache"),
            "extract.dataset": str(data),
            "extract.models": (llama, bert, "tfidf"),
            "extract.dtype": "fp32",
            "extract.device": "cpu",
            "extract.show_progress": False,
            "study.preset": "search",
            "study.name": STUDY,
            "study.trials": 1,
            "study.seeds": 2,
            "study.storage": f"sqlite:///{root}/mlruns/optuna.db",  # root is laid out as a project folder
            "study.pruning": False,
            "tracking.uri": f"sqlite:///{root}/mlruns/mlflow.db",
            "tracking.artifact_root": str(root / "mlruns" / "artifacts"),
            "train.max_epochs": 6,
            "train.patience": 2,
            "train.batch_size": 8,
        },
    )
    (root / "mlruns").mkdir(exist_ok=True)
    extract_all(cfg)
    study = optuna.create_study(study_name=STUDY, storage=cfg.study.storage, direction="maximize")
    study.enqueue_trial(
        {
            "subset": f"{llama}+{bert}+tfidf",
            f"layer.{llama}": 2,
            f"agg.{llama}": "mean",
            f"k.{llama}": 2,
            f"layer.{bert}": 2,
            f"agg.{bert}": "single",
            "layer.tfidf": 0,
            "agg.tfidf": "single",
            "fusion": "sum",
            "train.lr": 3e-3,
            "train.hidden": 128,
            "train.dropout": 0.1,
            "train.weight_decay": 1e-6,
            "train.proj_dim": 256,
        }
    )
    run_study(cfg)
    return cfg
