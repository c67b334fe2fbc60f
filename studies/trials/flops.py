"""``perf/infer_gflops_per_text``: the computed forward cost of what an exported configuration runs on one text.

Counted, not timed, so it is deterministic (2 FLOPs per multiply-add, the usual convention; Kaplan et al. 2020,
"Scaling laws for neural language models", Sec. 2.1). Per member model, its transformer blocks up to the deepest
layer the configuration reads (hidden state ``l`` is the output of ``l`` blocks; the embedding lookup and the
pooling are free) at the model's mean tokens per text on the dataset (``tokens / n`` of its train cache):

- attention projections ``2 T H (q + k + v + o widths)`` (grouped-query attention: k and v are
  ``kv_heads x head_dim`` wide), attention scores and their weighted sum ``4 T^2 heads x head_dim`` (computed in full,
  as the extractor runs it, also for causal masks),
- the MLP ``2 T H I`` per matrix: two for BERT-style blocks, three for gated (SwiGLU) decoders;

the lexical model (TF-IDF + truncated SVD) as a sparse product: ``2 x nnz x width``, nnz (distinct 1-2 grams of a
text) bounded by twice its word count; and projection, fusion and head as 2 FLOPs per trained parameter (every one
of them is one multiply-add per text, biases aside).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.core.models import LEXICAL, MODELS, ModelSpec
from lightning_modules.layers import parse_layer_spec

GATED_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "falcon", "phi3", "olmo", "granite"}
NGRAMS_PER_WORD = 2  # TF-IDF reads word 1- and 2-grams: at most ~2 distinct features per word


def block_flops(config: Mapping[str, Any], tokens: float) -> float:
    """Forward FLOPs of one transformer block over a text of ``tokens`` tokens (``config``: a HF ``config.json``)."""
    c = config.get("text_config") or config
    h = int(c["hidden_size"])
    heads = int(c.get("num_attention_heads") or max(h // 64, 1))
    head_dim = int(c.get("head_dim") or h // heads)
    kv = int(c.get("num_key_value_heads") or heads)
    inter = int(c.get("intermediate_size") or 4 * h)
    gated = c.get("model_type") in GATED_TYPES
    t = float(tokens)
    projections = 2 * t * h * (2 * heads * head_dim + 2 * kv * head_dim)  # q and o, k and v
    attention = 4 * t * t * heads * head_dim  # scores QK^T and their weighted sum of V
    mlp = 2 * t * h * inter * (3 if gated else 2)
    return projections + attention + mlp


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """The model's ``config.json`` when its folder is local, else a BERT-like block of its registered width."""
    if spec.path is not None and (Path(spec.path) / "config.json").is_file():
        loaded: dict[str, Any] = json.loads((Path(spec.path) / "config.json").read_text())
        return loaded
    return {"hidden_size": spec.hidden_size, "model_type": spec.kind}


def sparse_flops(words: float, width: float) -> float:
    """FLOPs of a sparse TF-IDF row (1-2 grams of ``words`` words) times a dense ``(features, width)`` matrix."""
    return 2.0 * NGRAMS_PER_WORD * float(words) * float(width)


def member_flops(spec: ModelSpec, config: Mapping[str, Any], layer: int, tokens: float) -> float:
    """FLOPs of one member model up to hidden state ``layer`` (TF-IDF: its SVD projection, ``sparse_flops``)."""
    if spec.kind == LEXICAL:
        return sparse_flops(tokens, spec.hidden_size)
    return max(layer, 0) * block_flops(config, tokens)


def deepest(spec_text: str, num_layers: int) -> int:
    """The deepest absolute hidden state a layer spec reads (``-1`` of a 6-layer model: 6)."""
    return max(i if i >= 0 else i % (num_layers + 1) for i in parse_layer_spec(str(spec_text)).layers)


def mean_tokens(meta: Mapping[str, Any]) -> float:
    """Mean tokens per text of a cache (``tokens / n`` of its ``meta.json``; NaN when not recorded)."""
    n, tokens = meta.get("n") or 0, meta.get("tokens") or 0
    return float(tokens) / float(n) if n and tokens else math.nan


def infer_gflops(
    layers: Mapping[str, str],
    specs: Mapping[str, ModelSpec],
    tokens: Mapping[str, float],
    head_params: float,
) -> float:
    """GFLOPs per text of a configuration: every member up to its deepest layer, plus 2 x the head's parameters.

    Args:
        layers: Model alias -> layer spec (``"4"``, ``"mean:last3"``).
        specs: Model alias -> its resolved ``ModelSpec`` (``path`` set for local folders).
        tokens: Model alias -> mean tokens per text on the dataset.
        head_params: Trainable parameters of projection, fusion and head (``perf/param_count``).
    """
    total = 2.0 * float(head_params)
    for model, text in layers.items():
        spec = specs[model]
        total += member_flops(spec, model_config(spec), deepest(text, spec.num_layers), tokens[model])
    return total / 1e9


def registered(alias: str) -> ModelSpec | None:
    """The registry's spec of ``alias`` (None for an unregistered model)."""
    return MODELS.get(alias) if alias in MODELS else None
