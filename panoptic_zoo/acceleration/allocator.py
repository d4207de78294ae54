"""
CPU heap settings for large-tensor work.

glibc's ``malloc`` serves every block above 128 KiB-32 MiB with a fresh ``mmap`` and returns it to
the OS on ``free``. A network's activations at 800x1333 are tens of MiB each, so every layer's
output would start as untouched pages and pay one page fault per 4 KiB on first write, which
can cost a layer more than its arithmetic. Keeping freed blocks in the heap lets the next layer
reuse pages that are already mapped, as tcmalloc or jemalloc would. A process-wide setting:
entry points (train_net.py, the demo, the benchmark) call it, never a library function.

The cost: the process keeps its peak heap until it ends (``malloc_trim`` still gives free pages
back on request), which is what a training or evaluation process does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["reuse_freed_heap_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the top of the heap kept instead of being returned to the OS (mallopt takes an
# int: 2 GiB is the most it can say).
_TRIM_THRESHOLD_BYTES = 2**31 - 1


def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def reuse_freed_heap_memory() -> bool:
    """
    Make glibc's ``malloc`` keep freed blocks of any size for reuse instead of unmapping them
    (``mallopt(M_MMAP_MAX, 0)``, ``M_TRIM_THRESHOLD`` 2 GiB). Returns whether the
    settings were applied: False where the C library is not glibc (musl, macOS, Windows), where
    nothing changes. Idempotent; affects the whole process and the processes it forks.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = (
        libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    )
    if not applied:
        logger.warning("glibc mallopt refused the heap settings: large tensors stay mmap-ed")
    return applied
