"""The model zoo as data: ``MODELS`` maps aliases to ``ModelSpec`` and ``resolve_model`` turns any name into one.

Embedded defaults resolve under ``paths.models_dir`` (offline); every spec also carries its hub id, so a
user with hub access can name either. Any other hub id or local directory works too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, cast

from benchmark.core.cache import atomic_write_bytes
from benchmark.core.errors import UserError
from benchmark.core.registry import Registry, UnknownNameError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
LEXICAL = "lexical"  # ModelSpec.kind of models computed from the texts by scikit-learn, not loaded from weights
WEIGHTS_HASH_FILE = "weights_sha256.json"  # under paths.cache_dir: weights hashes keyed on (path, size, mtime)
DEFAULT_MAX_LENGTH = 512
# Model types whose position ids start after the padding index, so positions usable by text are fewer.
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text"}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as layerfuse sees it.

    Attributes:
        alias: Short lowercase name (``minilm-l6``) or the user's id/path for unregistered models.
        hf_id: Hugging Face hub id.
        kind: ``decoder``, ``encoder`` or ``lexical`` (TF-IDF, fitted on the train split: ``extractors.tfidf``).
        num_layers: Transformer layers L (the cache holds L+1 hidden states, 0 = embeddings).
        hidden_size: Width H of every hidden state.
        default_pooling: Pooling used when the user names none.
        max_length: Default token limit.
        local_dir: Folder name under ``paths.models_dir`` for embedded models, else None.
        gguf_file: GGUF weights file inside the folder (GGUF checkpoints only).
        revision: Hub revision to pin (``main`` when unknown).
        prefix: Text prefix the model expects (e.g. ``"query: "`` for e5).
        path: Resolved local directory, set by ``resolve_model`` when one exists.
    """

    alias: str
    hf_id: str
    kind: str
    num_layers: int
    hidden_size: int
    default_pooling: str
    max_length: int = 512
    local_dir: str | None = None
    gguf_file: str | None = None
    revision: str = "main"
    prefix: str = ""
    path: str | None = None

    @property
    def source(self) -> str:
        """What ``from_pretrained`` is given: the local path when resolved, else the hub id."""
        return self.path or self.hf_id


MODELS: Registry[ModelSpec] = Registry("model")


def _add(spec: ModelSpec) -> None:
    MODELS.add(spec.alias, spec)


# Decoders default to masked mean pooling: on frozen decoder states it beat last-token pooling in our MR
# probe (last-token states of small decoders are dominated by next-token prediction); `last_token` stays available.
_add(
    ModelSpec(
        "smollm2-135m",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "decoder",
        30,
        576,
        "mean",
        512,
        local_dir="SmolLM2-135M-Instruct-Q4_1-gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    )
)
_add(
    ModelSpec(
        "minilm-l6",
        "sentence-transformers/all-MiniLM-L6-v2",
        "encoder",
        6,
        384,
        "mean",
        256,
        local_dir="all-MiniLM-L6-v2",
    )
)
_add(
    ModelSpec(
        "minilm-l3",
        "sentence-transformers/paraphrase-MiniLM-L3-v2",
        "encoder",
        3,
        384,
        "mean",
        128,
        local_dir="paraphrase-MiniLM-L3-v2",
    )
)
# The paper's models (hub only; several need accepting a licence on the hub first).
_add(ModelSpec("llama2-7b", "meta-llama/Llama-2-7b-hf", "decoder", 32, 4096, "mean", 512))
_add(ModelSpec("qwen2.5-7b", "Qwen/Qwen2.5-7B", "decoder", 28, 3584, "mean", 512))
_add(ModelSpec("mistral-7b", "mistralai/Mistral-7B-v0.1", "decoder", 32, 4096, "mean", 512))
_add(ModelSpec("falcon3-7b", "tiiuae/Falcon3-7B-Base", "decoder", 28, 3072, "mean", 512))
_add(ModelSpec("gemma2-2b", "google/gemma-2-2b", "decoder", 26, 2304, "mean", 512))
# NV-Embed-v2 ships custom code: it needs extract.trust_remote_code=true; it expects instruction-prefixed queries.
_add(
    ModelSpec(
        "nv-embed-v2",
        "nvidia/NV-Embed-v2",
        "decoder",
        32,
        4096,
        "mean",
        512,
        prefix="Instruct: Classify the given text\nQuery: ",
    )
)
# The lexical baseline as a fusable one-layer "model": TF-IDF word 1-2 grams reduced by truncated SVD to 512 dims.
# Its "revision" names the recipe; the cache key adds the hash of the train split it was fitted on
# (benchmark.core.keys).
_add(ModelSpec("tfidf", "layerfuse/tfidf-svd", LEXICAL, 0, 512, "mean", 0, revision="w12-df2-sublin-svd512-v1"))
_add(ModelSpec("e5-large-v2", "intfloat/e5-large-v2", "encoder", 24, 1024, "mean", 512, prefix="query: "))


def position_limit(config: dict[str, Any]) -> int | None:
    """Longest input (in tokens, special tokens included) a model config allows, or None when it states none."""
    text = config.get("text_config") or config
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = text.get(name)
        if isinstance(value, int) and value > 0:
            if text.get("model_type") in OFFSET_POSITIONS:
                value -= int(text.get("pad_token_id") or 1) + 1
            return value
    return None


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"model folder {folder} has no readable config.json: point --model at a Hugging Face model folder"
        ) from None
    if not isinstance(cfg, dict):
        raise UserError(f"model folder {folder}: config.json is not a JSON object")
    return cfg


def check_max_length(spec: ModelSpec, max_length: int, config: dict[str, Any] | None = None) -> None:
    """Refuse a token limit beyond the model's position embeddings (the model would fail mid-extraction).

    Args:
        spec: The model; its local ``config.json`` is read when ``config`` is not given.
        max_length: Requested tokens per text.
        config: The model's config as a dict (for hub models, known once loaded).

    Raises:
        UserError: naming the limit and the fix.
    """
    if config is None:
        if spec.path is None or not (Path(spec.path) / "config.json").is_file():
            return  # a hub model: checked once its config is loaded
        config = _read_config(Path(spec.path))
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise UserError(
            f"max length {max_length} exceeds the {limit} positions of model '{spec.alias}' "
            f"(config max_position_embeddings); use --max-length {limit} or less"
        )


def _local_spec(name: str, folder: Path) -> ModelSpec:
    """Build a spec for an unregistered local model folder from its ``config.json``."""
    if not (folder / "config.json").is_file():
        raise UserError(f"model folder {folder} has no config.json: point --model at a Hugging Face model folder")
    cfg = _read_config(folder)
    text = cfg.get("text_config") or cfg
    is_decoder = (
        bool(cfg.get("is_decoder"))
        or any(a.endswith("ForCausalLM") for a in cfg.get("architectures") or [])
        or text.get("model_type") in {"llama", "mistral", "qwen2", "gemma", "gemma2", "falcon", "gpt2", "phi3", "phi"}
    )
    gguf = sorted(folder.glob("*.gguf"))
    return ModelSpec(
        alias=name,
        hf_id=name,
        kind="decoder" if is_decoder else "encoder",
        num_layers=int(text.get("num_hidden_layers", text.get("n_layer", 0))),
        hidden_size=int(text.get("hidden_size", text.get("n_embd", 0))),
        default_pooling="mean",
        max_length=min(DEFAULT_MAX_LENGTH, position_limit(cfg) or DEFAULT_MAX_LENGTH),
        gguf_file=gguf[0].name if gguf else None,
        path=str(folder),
    )


@cache
def _warn_hub_fallback(name: str, folder: str, hf_id: str) -> None:
    log.warning(
        "model '%s': no folder %s (paths.models_dir / LAYERFUSE_MODELS_DIR); using hub id %s, which needs "
        "network access",
        name,
        folder,
        hf_id,
    )


def resolve_model(name: str, models_dir: str | Path) -> ModelSpec:
    """Turn an alias, hub id or local folder into a ``ModelSpec`` with ``path`` set where weights are local.

    Raises:
        UserError: unknown alias (with suggestions) or a local folder that is not a model.
    """
    if name in MODELS:
        spec = MODELS.get(name)
        if spec.local_dir:
            folder = Path(models_dir) / spec.local_dir
            if folder.is_dir():
                if spec.gguf_file and not (folder / spec.gguf_file).is_file():
                    raise UserError(
                        f"model '{name}': GGUF file {spec.gguf_file} is missing from {folder}; restore it or set "
                        "paths.models_dir"
                    )
                return replace(spec, path=str(folder))
            _warn_hub_fallback(name, str(folder), spec.hf_id)
        return spec
    for spec in (s for _, s in MODELS.items()):
        if spec.hf_id == name:
            return resolve_model(spec.alias, models_dir)
    folder = Path(name)
    if folder.is_dir():
        return _local_spec(name, folder)
    check_model_name(name)
    # An unregistered hub id: layer count and width are read from its config at extraction time.
    return ModelSpec(alias=name, hf_id=name, kind="encoder", num_layers=0, hidden_size=0, default_pooling="mean")


def _hub_shaped(name: str) -> bool:
    return "/" in name and not name.startswith((".", "/")) and name.count("/") == 1


def check_model_name(name: str) -> None:
    """Refuse (``UserError``, with suggestions) a name that is no alias, registered hub id, folder or hub id.

    Reads only the registry and the file system, so the command line refuses a misspelt alias before it imports
    torch; ``resolve_model`` refuses the same names.
    """
    if name in MODELS or any(s.hf_id == name for _, s in MODELS.items()) or Path(name).is_dir() or _hub_shaped(name):
        return
    try:
        MODELS.get(name)
    except UnknownNameError as err:
        raise UserError(f"{err}; or give a hub id (org/name) or a local model folder") from None


@lru_cache(maxsize=64)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _size, _mtime in files:
        h.update(Path(path).name.encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a local model folder (sorted), or its ``config.json`` when it holds none."""
    folder = Path(folder)
    weights = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    # A hub snapshot folder without weight files is unusual; fall back to config identity.
    return weights or [folder / "config.json"]


def weights_sha256(folder: str | Path) -> str:
    """The full sha256 over a local model folder's weight files (names and bytes), as ``model_revision`` hashes them."""
    return _hash_files(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in weight_files(folder)))


def _memo_load(memo: Path) -> dict[str, Any]:
    try:
        data = json.loads(memo.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def model_revision(spec: ModelSpec, cache_dir: str | Path | None = None) -> str:
    """Revision used in cache keys: ``sha-<weights hash>`` for local weights, else the hub revision.

    Hashing local weights (not names) means replacing a checkpoint in place invalidates its cache. Hashing reads
    every weight byte (14 GB for a local 7B model), so the hash is remembered in ``cache_dir`` keyed on each
    file's path, size and mtime: a command that only hits the cache reads no weights.
    """
    if spec.path is None:
        return spec.revision
    folder = Path(spec.path)
    files = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in weight_files(folder))
    memo = Path(cache_dir) / WEIGHTS_HASH_FILE if cache_dir is not None else None
    entry = {"files": [list(f) for f in files]}
    known = _memo_load(memo) if memo else {}
    slot = str(folder.resolve())
    hit = known.get(slot)
    if isinstance(hit, dict) and hit.get("files") == entry["files"] and isinstance(hit.get("sha256"), str):
        return "sha-" + cast(str, hit["sha256"])[:16]
    digest = _hash_files(files)
    if memo:
        known[slot] = {**entry, "sha256": digest}
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(memo, json.dumps(known, indent=1, sort_keys=True).encode())
        except OSError as err:  # a read-only cache still works, it just hashes again next time
            log.debug("cannot remember the weights hash in %s: %s", memo, err)
    return "sha-" + digest[:16]
