"""What the machine can do: device and compute dtype resolution (torch imported lazily)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from benchmark.core.errors import UserError

# CPU flags that make bf16 faster than fp32 for both kinds of model. Measured on this project's 2-core AVX512-BF16
# CPU (no AMX) on 2026-11-27, other jobs running (load 6-10), 400 MR texts (minilm-l6) and 120 (smollm2-135m),
# interleaved best of 3-5, bf16 with Linear weights stored in bf16 once (extractors.hf.cast_linear_weights):
# minilm-l6 1.8-2.1x the fp32 tokens/s (one early run 0.8x), smollm2-135m 1.9-2.6x; pooled features vs fp32 cosine
# >= 0.9997; benchmark.speed_extract later the same day: 1.45x (minilm-l6) and 1.70x (smollm2-135m). An earlier
# run (2026-11-22) found bf16 at 0.6x fp32, but it also measured the bf16 matmul peak below fp32's, the opposite of
# every later run (2.3-2.6x): a loaded-machine outlier. So AVX512-BF16 (Zen 4, Cooper Lake and later) selects bf16,
# as AMX does.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Padded tokens per batch for the auto batch size. On CPU small batches keep the L+1 hidden states in cache
# (2,048 beat 16,384 by 1.6x on minilm-l6); GPUs want large batches and back off on out-of-memory.
TOKEN_BUDGET = {"cpu": 2048, "cuda": 65536}


@lru_cache(maxsize=4)
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when ``cpuinfo`` lists a bf16 matrix instruction set (AVX512-BF16 or AMX)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is a user error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("extract.device=cuda but no CUDA device is visible; use --device cpu or auto")
    return device


def resolve_token_budget(budget: int, device: str) -> int:
    """``0`` (auto) -> the device's default padded-token budget per batch."""
    return budget or TOKEN_BUDGET.get(device, TOKEN_BUDGET["cpu"])


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it faster (CUDA, CPU with AVX512-BF16 or AMX), else ``fp32``."""
    if dtype != "auto":
        return dtype
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"
