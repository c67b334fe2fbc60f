"""glibc's malloc told to keep freed memory, so CPU training does not page-fault on every large tensor.

By default glibc serves each allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns
it with ``munmap`` when freed, and trims the heap's freed top above 128 KB. A head's training step frees and
allocates the same large activations and gradients every step, so every step faults their pages in again and the
kernel zeroes them: on a fusion cell, a third of the CPU time was the kernel's (BENCHMARKS.md, "Allocator").
``keep_freed_memory`` turns both off (``mallopt`` here, ``MALLOC_*`` variables for the processes this one starts:
study workers, torchrun ranks); the arithmetic is unchanged, bit for bit. Freed memory stays with the process until
it exits, so its resident size stays near its peak. glibc's own variables (``MALLOC_*``, ``GLIBC_TUNABLES``) or a
preloaded allocator (jemalloc, tcmalloc) set by the user are left as they are.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
KEEP = {"MALLOC_MMAP_MAX_": 0, "MALLOC_TRIM_THRESHOLD_": 2**31 - 1}  # no mmap'd chunks; trim only above 2 GB
ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")  # preloaded in place of glibc's malloc


def _user_chose() -> str | None:
    """The variable by which the user already chose how memory is allocated, if any (ours, inherited, are not)."""
    for key in sorted(os.environ):
        value = os.environ[key]
        if key in KEEP and value == str(KEEP[key]):
            continue  # set by the layerfuse process that started this one
        if key.startswith("MALLOC_") or key == "GLIBC_TUNABLES" and "malloc" in value:
            return key
        if key == "LD_PRELOAD" and any(a in value for a in ALLOCATORS):
            return key
    return None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory, in this process and the ones it starts; True if it was told.

    Nothing happens off Linux, with another C library, or when the user set the allocator up (see the module).
    """
    if not sys.platform.startswith("linux"):
        return False
    chosen = _user_chose()
    if chosen is not None:
        log.debug("allocator left as set by %s", chosen)
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc tunables to set
        return False
    told = mallopt(M_MMAP_MAX, KEEP["MALLOC_MMAP_MAX_"]) and mallopt(M_TRIM_THRESHOLD, KEEP["MALLOC_TRIM_THRESHOLD_"])
    if not told:  # mallopt returns 0 on error
        return False
    os.environ.update({k: str(v) for k, v in KEEP.items()})  # read by glibc as each child process starts
    return True
