"""What the machine can do: device and compute dtype resolution (torch imported lazily)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from benchmark.errors import UserError

# CPU flags that give fast bf16 matrix products (AVX512-BF16 dot products, AMX tiles).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists a bf16 matrix instruction set."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
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


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``bf16`` where the hardware has fast bf16 (CUDA with bf16, or CPU bf16 units), else ``fp32``."""
    if dtype != "auto":
        return dtype
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"
