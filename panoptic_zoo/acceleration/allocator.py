"""
CPU heap settings for large-tensor work.

glibc's ``malloc`` serves every block above 128 KiB-32 MiB with a fresh ``mmap`` and returns it to
the OS on ``free``. A network's activations at 800x1333 are tens of MiB each, so every layer's
output would start as untouched pages and pay one page fault per 4 KiB on first write, which
can cost a layer more than its arithmetic. Keeping freed blocks in the heap lets the next layer
reuse pages that are already mapped, as tcmalloc or jemalloc would. A process-wide setting:
entry points (train_net.py, the demo, the benchmark) make it, never a library function.

Two parts, since glibc reads one of them only when a process starts:

- :func:`restart_with_heap_tunables`, first thing in an entry point: runs the process again with
  glibc's per-thread cache of small freed chunks off. torch allocates tensors with
  ``posix_memalign``, which asks for the size plus the alignment plus 32 bytes and frees the few
  bytes it trims off either end into that cache (glibc 2.36; upstream's bug 30723 changed it). A
  cached chunk counts as in use, so a freed tensor block next to one cannot merge with it, stays
  smaller than the next request of the same size, and that request takes new pages: with the
  cache on, 4 of 10 processes faulted all of four freed 64 MiB blocks in again
  (docs/ACCELERATION.md).
- :func:`reuse_freed_heap_memory`, where the device is known to be the CPU: ``mallopt`` keeps
  freed blocks of any size in the heap.

The cost: the process keeps its peak heap until it ends (``malloc_trim`` still gives free pages
back on request), which is what a training or evaluation process does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

__all__ = ["restart_with_heap_tunables", "reuse_freed_heap_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the top of the heap kept instead of being returned to the OS (mallopt takes an
# int: 2 GiB is the most it can say).
_TRIM_THRESHOLD_BYTES = 2**31 - 1
# Read by glibc at process start only (glibc's "Tunables" manual).
_TUNABLES_VARIABLE = "GLIBC_TUNABLES"
_THREAD_CACHE_COUNT = "glibc.malloc.tcache_count"
_THREAD_CACHE_OFF = f"{_THREAD_CACHE_COUNT}=0"


def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def _thread_cache_count() -> str | None:
    """The cache's count that GLIBC_TUNABLES (colon-separated name=value pairs) sets, if any."""
    for item in os.environ.get(_TUNABLES_VARIABLE, "").split(":"):
        name, _, value = item.partition("=")
        if name == _THREAD_CACHE_COUNT:
            return value
    return None


def _environment_at_start() -> dict[str, str]:
    """The environment this process started with, not what its imports have set since (OpenCV
    prepends its own library folder to LD_LIBRARY_PATH); os.environ where /proc is missing."""
    try:
        entries = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return dict(os.environ)
    return dict(os.fsdecode(entry).split("=", 1) for entry in entries if b"=" in entry)


def restart_with_heap_tunables() -> None:
    """
    Replace this process by the same command run with glibc's per-thread cache off
    (``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``, added to any tunables already set), so that
    freed tensor blocks merge and are reused (see the module's docstring). Does nothing where the
    C library is not glibc or the variable already sets the cache's count (as in the restarted
    process; a count the user chose is kept). Call it first in an entry point's ``__main__``,
    before the process writes anything or starts processes: the command starts again from its
    beginning (``sys.orig_argv``), in the environment the process started with.
    """
    if _glibc() is None or _thread_cache_count() is not None:
        return
    environment = _environment_at_start()
    tunables = environment.get(_TUNABLES_VARIABLE, "")
    environment[_TUNABLES_VARIABLE] = ":".join(filter(None, [tunables, _THREAD_CACHE_OFF]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def reuse_freed_heap_memory() -> bool:
    """
    Make glibc's ``malloc`` keep freed blocks of any size for reuse instead of unmapping them
    (``mallopt(M_MMAP_MAX, 0)``, ``M_TRIM_THRESHOLD`` 2 GiB). Returns whether freed blocks are
    reused: False where the C library is not glibc (musl, macOS, Windows), where nothing changes,
    and, with a warning, where the process was not started with the thread cache off
    (:func:`restart_with_heap_tunables`), where the settings are made but aligned blocks are
    often not reused. Idempotent; affects the whole process and the processes it forks.
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
        return False
    if _thread_cache_count() != "0":
        logger.warning(
            f"glibc's thread cache is on, so freed tensor blocks are often not reused: start the "
            f"process with {_TUNABLES_VARIABLE}={_THREAD_CACHE_OFF} (the entry points restart "
            "with it: restart_with_heap_tunables)"
        )
        return False
    return True
