"""Cut a Hugging Face model after its layer L, so that its hidden states 0..L equal the full model's.

A model whose highest used layer is L < num_layers needs only its first L blocks. Two details make the cut
exact: ``config.num_hidden_layers`` shrinks with the block list (some models loop over the config count), and
the final norm becomes the identity, because HF appends the *normed* output of the last block as the last
hidden state (``hidden_states[-1] = last_hidden_state``): in the full model ``hidden_states[L]`` is the
un-normed output of block L, so a cut model that kept its final norm would return a different layer L.
A model kept whole (L = num_layers) keeps its norm: then its last state is the full model's, norm included.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

FINAL_NORMS = ("norm", "final_layernorm", "ln_f", "final_layer_norm")  # names of a base model's last norm
PER_LAYER_CONFIG = ("layer_types",)  # config lists with one entry per block


class TruncateError(ValueError):
    """A model whose block list cannot be found, or a layer it does not have."""


def _config(model: nn.Module) -> Any:
    config: Any = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def num_layers(model: nn.Module) -> int:
    """Transformer blocks of ``model`` according to its config."""
    return int(_config(model).num_hidden_layers)


def block_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The module owning the transformer blocks, the attribute name, and the blocks themselves.

    The blocks are the ``nn.ModuleList`` with exactly ``num_hidden_layers`` entries (``layers`` in Llama-style
    decoders, ``encoder.layer`` in BERT, ``h`` in GPT-2).

    Raises:
        TruncateError: no such list, or more than one.
    """
    n = num_layers(model)
    found = [
        (owner, attr, child)
        for owner in model.modules()
        for attr, child in owner.named_children()
        if isinstance(child, nn.ModuleList) and len(child) == n
    ]
    if len(found) != 1:
        raise TruncateError(
            f"{type(model).__name__}: expected one list of {n} transformer blocks, found {len(found)}; "
            "export this model with --weights reference"
        )
    return found[0]


def strip_final_norm(model: nn.Module) -> nn.Module:
    """Replace the base model's final norm (if any) by the identity; returns ``model``."""
    for name in FINAL_NORMS:
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, nn.Identity())
            return model
    return model


def truncate(model: nn.Module, layer: int, strip_norm: bool = True) -> bool:
    """Keep blocks ``1..layer`` of ``model`` in place; its ``hidden_states[0..layer]`` are then the full model's.

    Args:
        model: A HF base model (``AutoModel``), as the extractor loads it.
        layer: The highest hidden state needed (0 = embeddings only, which keeps the first block).
        strip_norm: Replace the final norm by the identity. False keeps it for ``save_pretrained`` (so the saved
            folder loads without missing weights); whoever loads the cut folder then calls ``strip_final_norm``.

    Returns:
        Whether blocks were cut (False when ``layer`` is the model's last layer: the model is left whole).

    Raises:
        TruncateError: ``layer`` outside ``0..num_layers``, or no recognisable block list.
    """
    n = num_layers(model)
    if not 0 <= layer <= n:
        raise TruncateError(f"layer {layer} does not exist: the model has layers 0..{n}")
    # Models that record hidden states by hooks on the blocks record none without one: layer 0 keeps block 1.
    layer = max(layer, 1)
    if layer >= n:
        return False
    owner, attr, blocks = block_list(model)
    setattr(owner, attr, nn.ModuleList(list(blocks)[:layer]))
    configs: list[Any] = [model.config, _config(model)]
    for config in {id(c): c for c in configs}.values():
        if getattr(config, "num_hidden_layers", None) == n:
            config.num_hidden_layers = layer
        for key in PER_LAYER_CONFIG:
            value = getattr(config, key, None)
            if isinstance(value, list | tuple) and len(value) == n:
                setattr(config, key, type(value)(value[:layer]))
        # Models that record hidden states by hooks then return block L's raw output last, not the normed one.
        config.tie_last_hidden_states = False
    if strip_norm:
        strip_final_norm(model)
    log.debug("%s cut at layer %d of %d", type(model).__name__, layer, n)
    return True


def param_count(model: nn.Module) -> int:
    """Parameters of ``model`` (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def weights_dtype(dtype: str) -> torch.dtype:
    """Storage dtype of exported Linear weights under a compute dtype policy (``fp32``, ``bf16``, ``fp16``)."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
