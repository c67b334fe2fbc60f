"""What the machine can do: device and compute dtype resolution (torch imported lazily)."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from benchmark.core.errors import UserError

# CPU flags that make bf16 faster than fp32 for both kinds of model: with AVX512-BF16 (Zen 4, Cooper Lake and
# later) or AMX, bf16 extraction with Linear weights cast once runs 1.5-2.6x fp32's tokens/s at >= 0.9997 cosine to
# the fp32 features (BENCHMARKS.md, "Extraction"); without them bf16 is emulated and slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Padded tokens per batch for the auto batch size. On CPU small batches keep the L+1 hidden states in cache
# (2,048 beat 16,384 by 1.6x on minilm-l6); GPUs want large batches and back off on out-of-memory.
TOKEN_BUDGET = {"cpu": 2048, "cuda": 65536}

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # the settings already warned about in this process


@lru_cache(maxsize=4)
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when ``cpuinfo`` lists a bf16 matrix instruction set (AVX512-BF16 or AMX)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return any(f in flags for f in BF16_CPU_FLAGS)


def warn_if_emulated_bf16(setting: str, fix: str) -> None:
    """Warn once per process and ``setting`` that bf16 runs emulated on a CPU without ``BF16_CPU_FLAGS``.

    Measured on an AVX2 runner: a bf16 matrix product at 0.9 GFLOP/s against fp32's 60-74 (docs/results.md). The
    caller knows the work is on the CPU in bf16; nothing is said on a CPU with the instructions.
    """
    if setting in _WARNED or cpu_has_bf16():
        return
    _WARNED.add(setting)
    log.warning(
        "%s on a CPU without %s: bf16 matrix products are emulated, many times slower than fp32 here; %s",
        setting,
        " or ".join(BF16_CPU_FLAGS),
        fix,
    )


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
