"""``HFHiddenStateExtractor``: one forward pass per batch yields all L+1 pooled hidden states of a HF model.

Texts are tokenized once, processed longest-first in length-sorted batches sized by a token budget
(little padding, and an out-of-memory surfaces on the first batch), and pooled on the fly so only
(L+1, B, H) vectors leave the model. bf16/fp16 run under autocast (norms and softmax stay fp32); on CPU the
Linear weights are stored in the compute dtype once, which autocast would otherwise cast on every batch, and
on CUDA the weights are loaded in the compute dtype to save memory.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.core.errors import UserError
from benchmark.core.hardware import warn_if_emulated_bf16
from benchmark.core.models import ModelSpec, check_max_length
from extractors.pooling import POOLINGS

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_RUN = 8  # equal-length rows that make an unpadded batch worth its own forward pass


@dataclass
class BatchStats:
    """Work done for one chunk."""

    seconds: float
    tokens: int


def _load_error(spec: ModelSpec, err: Exception) -> str:
    """One line saying which model failed to load, why, and where it was looked for."""
    reason = (str(err).strip().splitlines() or [""])[0][:200]
    if spec.path is not None:
        where = f"check that {spec.path} holds the model's weights and tokenizer files"
    else:
        where = (
            f"its embedded copy {spec.local_dir}/ was not found under paths.models_dir (LAYERFUSE_MODELS_DIR), and "
            if spec.local_dir
            else ""
        ) + "hub ids need network access (HF_HUB_OFFLINE unset) and the right name"
    return f"model '{spec.alias}': cannot load {spec.source} ({type(err).__name__}: {reason}); {where}"


def cast_linear_weights(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store the weights of ``model``'s Linear layers in ``dtype``; returns how many were cast.

    Autocast casts every fp32 Linear weight to the compute dtype on each forward pass (a copy of every weight
    per batch). A weight already in that dtype is used as is, so the results are bit-identical (tested), the
    weights take half the memory, and it is never measurably slower (0.96-2.1x per-batch autocast's speed on this
    project's CPU, BENCHMARKS.md).
    Norms, embeddings and anything tied to them stay fp32.
    """
    keep = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)}
    cast = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and all(id(p) not in keep for p in module.parameters(recurse=False)):
            module.to(dtype)
            cast += 1
    return cast


def _load_tokenizer(spec: ModelSpec, kwargs: dict[str, object]) -> Any:
    """The model's tokenizer (from its GGUF file where the folder has no tokenizer files), with a pad token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.source, **kwargs)
    except (OSError, ValueError) as err:
        if not spec.gguf_file:
            raise UserError(_load_error(spec, err)) from err
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file, **kwargs)
        except (OSError, ValueError) as err2:
            raise UserError(_load_error(spec, err2)) from err2
    if tokenizer.pad_token is None:
        # Decoders often ship without a pad token; padding positions are masked out, so any id works.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UserError(f"model '{spec.alias}': tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def _model_kwargs(
    spec: ModelSpec, kwargs: dict[str, object], device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """``from_pretrained``'s keywords for the model: ``kwargs`` plus its GGUF file, CUDA dtype and safetensors."""
    # Any: from_pretrained's typed keywords differ between transformers releases; the values are checked here.
    model_kwargs: dict[str, Any] = dict(kwargs)
    if spec.gguf_file:
        model_kwargs["gguf_file"] = spec.gguf_file
    if device.type == "cuda" and dtype != torch.float32:
        model_kwargs["dtype"] = dtype
    if spec.path is not None and not spec.gguf_file and any(Path(spec.path).glob("*.safetensors")):
        model_kwargs["use_safetensors"] = True  # never fall back to a pickle beside them
    return model_kwargs


def _checked_load(spec: ModelSpec, load: Callable[[], Any]) -> Any:
    """``load()``, with a load failure or an unsafe pickle as a one-line UserError naming the model."""
    try:
        return load()
    except (OSError, ValueError) as err:
        raise UserError(_load_error(spec, err)) from err
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False, which would run the pickle's code: we never retry so.
        raise UserError(
            f"model '{spec.alias}': the weights in {spec.source} are a pickle (.bin) holding more than tensors, "
            "which the safe loader refuses and layerfuse never loads unsafely; use a copy with .safetensors "
            "weights (convert it where you trust its source: load it yourself and save_pretrained)"
        ) from None


class HFHiddenStateExtractor:
    """Loads a model once and turns token-id lists into pooled per-layer features.

    Args:
        spec: Resolved model spec (local path or hub id).
        device: ``cpu`` or ``cuda`` (already resolved).
        dtype: ``fp32``, ``bf16`` or ``fp16`` (already resolved).
        pooling: A ``POOLINGS`` name.
        max_length: Token limit per text (longer texts are truncated).
        batch_size: Texts per batch, or 0 for the token budget.
        token_budget: Padded tokens per batch when ``batch_size`` is 0.
        trust_remote_code: Passed to ``from_pretrained``.
        cast_weights: On CPU with bf16/fp16, store Linear weights in that dtype once (same bytes, faster); False
            keeps them fp32 for autocast to cast on every batch (for speed comparisons).
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: str,
        dtype: str,
        pooling: str,
        max_length: int,
        batch_size: int = 0,
        token_budget: int = 2048,
        trust_remote_code: bool = False,
        cast_weights: bool = True,
    ) -> None:
        from transformers import AutoModel

        self.spec = spec
        self.device = torch.device(device)
        self.dtype = TORCH_DTYPES[dtype]
        self.pool = POOLINGS.get(pooling)
        self.max_length = max_length
        self.batch_size = batch_size
        self.token_budget = token_budget
        kwargs: dict[str, object] = {"trust_remote_code": trust_remote_code}
        if spec.path is not None:
            kwargs["local_files_only"] = True
        else:
            kwargs["revision"] = spec.revision
        started = time.perf_counter()
        self.tokenizer = _load_tokenizer(spec, kwargs)
        model_kwargs = _model_kwargs(spec, kwargs, self.device, self.dtype)
        self._load_model: Callable[[], Any] = lambda: (
            AutoModel.from_pretrained(spec.source, **model_kwargs).to(self.device).eval()
        )
        self.model = _checked_load(spec, self._load_model)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            warn_if_emulated_bf16("extract.dtype=bf16", "use --dtype auto (fp32 on this CPU)")
        self.cast_linears = (
            cast_weights
            and self.device.type == "cpu"
            and self.dtype != torch.float32
            and cast_linear_weights(self.model, self.dtype) > 0
        )
        # Under left padding a decoder must count positions from each text's first real token, or padded
        # rows get shifted rotary/absolute positions and differ from the same text run alone.
        self.pass_positions = "position_ids" in inspect.signature(self.model.forward).parameters
        self.load_seconds = time.perf_counter() - started
        config = (
            self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        )
        self.num_layers = int(config.num_hidden_layers)
        self.hidden_size = int(config.hidden_size)
        check_max_length(spec, max_length, config.to_dict())  # hub models: their limit is known only now
        log.info(
            "loaded %s (%d layers, H=%d) in %.1fs on %s/%s",
            spec.alias,
            self.num_layers,
            self.hidden_size,
            self.load_seconds,
            device,
            dtype,
        )

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, with the model's prefix and special tokens, truncated to ``max_length``."""
        prefixed = [self.spec.prefix + t for t in texts] if self.spec.prefix else texts
        return list(self.tokenizer(prefixed, truncation=True, max_length=self.max_length)["input_ids"])

    def batches(self, lengths: list[int]) -> Iterator[slice]:
        """Split a longest-first run of ``lengths`` into batches under the token budget (or of fixed size).

        A batch stops at the end of a run of equal lengths when that run alone fills ``MIN_RUN`` rows: such a
        batch has no padding, needs no attention mask, and runs the faster unmasked attention kernels. Batches
        are made one at a time, so a budget lowered by an out-of-memory back-off applies to the next one.
        """
        start = 0
        while start < len(lengths):
            size = self.batch_size or max(
                1, self.token_budget // max(1, lengths[start])
            )  # lengths[start] is the longest
            end = min(start + size, len(lengths))
            if not self.batch_size:
                run = start
                while run < end and lengths[run] == lengths[start]:
                    run += 1
                if run - start >= min(MIN_RUN, end - start):
                    end = run
            yield slice(start, end)
            start = end

    @torch.inference_mode()
    def _forward(self, ids: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Pooled states of every layer: (L+1, B, H) float32 on CPU, and the count of real tokens."""
        if len({len(x) for x in ids}) == 1:
            # No padding: no attention mask, so the model may take its unmasked fast path.
            input_ids = torch.tensor(ids, device=self.device)  # (B, T)
            enc: dict[str, torch.Tensor] = {"input_ids": input_ids}
            mask = torch.ones_like(input_ids)
        else:
            enc = {k: v.to(self.device) for k, v in self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").items()}
            mask = enc["attention_mask"]
            if self.pass_positions:
                enc["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            try:
                out = self.model(**enc, output_hidden_states=True)
            except RuntimeError as err:
                if not self.cast_linears or "dtype" not in str(err):
                    raise
                # The model runs some Linear with autocast disabled, where a lower-precision weight cannot
                # meet its fp32 input: reload it with fp32 weights and let autocast cast them per batch.
                log.warning(
                    "%s: a Linear runs outside autocast (%s); reloading with fp32 weights", self.spec.alias, err
                )
                self.model, self.cast_linears = self._load_model(), False
                out = self.model(**enc, output_hidden_states=True)
        # Pool layer by layer: stacking first would copy all (L+1, B, T, H) states at once.
        pooled = torch.stack([self.pool(h, mask) for h in out.hidden_states])  # (L+1, B, H) fp32
        return pooled.cpu(), int(mask.sum())

    def _forward_backoff(self, ids: list[list[int]]) -> tuple[torch.Tensor, int]:
        """``_forward``, halving the batch on CUDA OOM until it fits (later batches keep the smaller size)."""
        try:
            return self._forward(ids)
        except torch.cuda.OutOfMemoryError:
            if len(ids) == 1:
                raise UserError(
                    f"one text of {len(ids[0])} tokens does not fit in GPU memory; lower --max-length"
                ) from None
            torch.cuda.empty_cache()
            # Half of what failed, not half of the budget: repeated failures in one split must not shrink it twice.
            padded = len(ids) * max(len(x) for x in ids)
            self.token_budget = max(1, min(self.token_budget, padded // 2))
            if self.batch_size:
                self.batch_size = max(1, min(self.batch_size, len(ids) // 2))
            log.warning("CUDA out of memory at a batch of %d texts; token budget now %d", len(ids), self.token_budget)
            half = len(ids) // 2
            a, ta = self._forward_backoff(ids[:half])
            b, tb = self._forward_backoff(ids[half:])
            return torch.cat([a, b], dim=1), ta + tb

    def encode_ids(self, ids: list[list[int]], progress: object | None = None) -> tuple[np.ndarray, BatchStats]:
        """Features for a longest-first list of token-id lists: (L+1, n, H) float16 and the work done."""
        started = time.perf_counter()
        parts, tokens = [], 0
        for sl in self.batches([len(x) for x in ids]):
            pooled, n_tok = self._forward_backoff(ids[sl])
            parts.append(pooled.to(torch.float16).numpy())
            tokens += n_tok
            if progress is not None:
                progress.update(sl.stop - sl.start)  # type: ignore[attr-defined]
                elapsed = time.perf_counter() - started
                progress.set_postfix(tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")  # type: ignore[attr-defined]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return np.concatenate(parts, axis=1), BatchStats(time.perf_counter() - started, tokens)
