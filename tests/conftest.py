"""Shared fixtures: tiny random models saved locally, a small CSV dataset, and a per-test cache dir.

Nothing here downloads: models are built from tiny configs with a WordLevel tokenizer over the
fixture vocabulary (STYLE G21). Integration tests use ``../shared`` and skip where it is absent.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests where CUDA is absent (CI has no GPU; a GPU machine runs them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


WORDS = (
    "good great fine bad awful poor movie film plot actor scene story the a is was very not quite "
    "really boring fun dull bright slow fast"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture(scope="session", autouse=True)
def mlflow_schema_template(tmp_path_factory: pytest.TempPathFactory):
    """Each fresh SQLite MLflow store in this process starts as a copy of one store MLflow built once.

    MLflow creates a store's schema by running its migrations (~2 s a store, several per test module); a copy of a
    store MLflow made itself, by SQLite's backup API, is the same schema in milliseconds. Stores created by
    subprocesses (the CLI and concurrency tests) still run the migrations themselves.
    """
    import sqlite3

    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_registered_models()  # tracking and registry tables, migrated
    migrate = db_utils._initialize_tables

    def copy_or_migrate(engine) -> None:  # noqa: ANN001  (a SQLAlchemy engine)
        if engine.url.get_backend_name() != "sqlite" or not engine.url.database:
            migrate(engine)
            return
        raw = engine.raw_connection()
        try:
            with sqlite3.connect(template) as src:
                src.backup(raw.driver_connection)
        finally:
            raw.close()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(db_utils, "_initialize_tables", copy_or_migrate)
        mp.setattr(registry_store, "_initialize_tables", copy_or_migrate)
        yield


@pytest.fixture(scope="session", autouse=True)
def session_mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """Commands that track runs without being given a store (``layerfuse extract`` in CLI tests) write to one
    session store and its artifact folder, never to the repository's ``mlruns/`` (and pay MLflow's schema set-up once).
    """
    store = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
        mp.setenv("LAYERFUSE_ARTIFACT_ROOT", str(store / "artifacts"))
        yield


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        length = rng.randint(1, 14)  # varied lengths exercise sorting and padding
        words = [rng.choice(WORDS) for _ in range(length)]
        words.append("good" if label else "bad")
        rows.append((" ".join(words), "pos" if label else "neg"))
    return rows


def write_dataset(folder: Path, n_train: int = 24, n_test: int = 12) -> Path:
    """Write ``train.csv``/``test.csv`` (text,label) into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(_texts(n, seed))
    return folder


def _tokenizer(padding_side: str, bos_eos: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos_eos:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        padding_side=padding_side,
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local folders of tiny random models: a Llama decoder (left and right padding) and two BERTs."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    root = tmp_path_factory.mktemp("models")
    vocab = len(SPECIALS) + len(WORDS)
    out: dict[str, Path] = {}
    torch.manual_seed(0)
    llama = LlamaModel(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
        )
    )
    for side in ("left", "right"):
        folder = root / f"tiny-llama-{side}"
        llama.save_pretrained(folder)
        _tokenizer(side, bos_eos=False).save_pretrained(folder)
        out[f"llama-{side}"] = folder
    for name, hidden in (("bert-a", 32), ("bert-b", 48)):
        bert = BertModel(
            BertConfig(
                vocab_size=vocab,
                hidden_size=hidden,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                max_position_embeddings=64,
            )
        )
        folder = root / f"tiny-{name}"
        bert.save_pretrained(folder)
        _tokenizer("right", bos_eos=True).save_pretrained(folder)
        out[name] = folder
    # Absolute position embeddings make left padding wrong unless positions start at each first real token.
    folder = root / "tiny-bert-a-left"
    BertModel.from_pretrained(out["bert-a"]).save_pretrained(folder)
    _tokenizer("left", bos_eos=True).save_pretrained(folder)
    out["bert-a-left"] = folder
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``train.csv`` (24 rows) and ``test.csv`` (12 rows), labels pos/neg."""
    return write_dataset(tmp_path_factory.mktemp("data") / "toy")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A fresh feature-cache root for one test."""
    return tmp_path / "cache"


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the repo, or skip the test with the reason."""
    if not (SHARED / "models").is_dir() or not (SHARED / "data").is_dir():
        pytest.skip(f"integration data not found at {SHARED} (needs ../shared/models and ../shared/data)")
    return SHARED


@pytest.fixture(scope="module")  # per module: each study test module writes its own stores
def study_env(tiny_models, tmp_path_factory) -> dict[str, str]:
    """Cached features of two tiny BERTs and a tiny Llama on a 60/30 text dataset, shared by a module's tests."""
    from benchmark.core.config import load_config
    from extractors.run import extract_all

    root = tmp_path_factory.mktemp("study")
    data = write_dataset(root / "data", n_train=60, n_test=30)
    env = {
        "data": str(data),
        "cache": str(root / "cache"),
        "a": str(tiny_models["bert-a"]),
        "b": str(tiny_models["bert-b"]),
        "l": str(tiny_models["llama-right"]),
    }
    cfg = load_config(
        env={},
        **{
            "extract.models": (env["a"], env["b"], env["l"]),
            "extract.dataset": env["data"],
            "extract.dtype": "fp32",
            "extract.device": "cpu",
            "paths.cache_dir": env["cache"],
            "extract.show_progress": False,
        },
    )
    extract_all(cfg)
    return env


@pytest.fixture
def split_reads(monkeypatch) -> Counter:
    """Each split's reads of the dataset from here on (``load_split``, under every caller), by split name."""
    import benchmark.core.keys as keys

    count: Counter = Counter()
    real = keys.load_split

    def counted(dataset, split, *args, **kwargs):
        count[split] += 1
        return real(dataset, split, *args, **kwargs)

    monkeypatch.setattr(keys, "load_split", counted)
    return count


@pytest.fixture
def client_opens(monkeypatch) -> list[str]:
    """The tracking URI of each MLflow client opened from here on (``tracking.client``, under every caller)."""
    import benchmark.core.tracking as tracking

    opened: list[str] = []
    real = tracking.client

    def counted(cfg):
        opened.append(cfg.uri)
        return real(cfg)

    monkeypatch.setattr(tracking, "client", counted)
    return opened
