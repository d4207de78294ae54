"""Freed CPU tensor memory is reused without page faults once the heap settings are applied."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from panoptic_zoo.acceleration import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="the settings are glibc's")

# Writes a 64 MiB tensor and frees it, then four more, and prints the page faults of those four.
# It sets the heap as the entry points do: restarts with the tunables first, loads
# panoptic_zoo.config and the C extensions (the class-map and PQ kernels), then applies the
# mallopt settings.
_LATER_TENSORS_FAULTS = """
import resource, sys
from panoptic_zoo.acceleration.allocator import restart_with_heap_tunables
if sys.argv[1] == "reuse":
    restart_with_heap_tunables()
import torch
import panoptic_zoo.config
from panoptic_zoo.acceleration import _class_maps
from panoptic_zoo.evaluation import _pq_kernels
from panoptic_zoo.acceleration.allocator import reuse_freed_heap_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_heap_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(16 * 2**20).fill_(1.0)
before = faults()
for value in range(4):
    torch.empty(16 * 2**20).fill_(float(value))
print(faults() - before)
"""


def _run(code: str, *args: str, tunables: str | None = None) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        environment["GLIBC_TUNABLES"] = tunables
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, check=True, timeout=120, env=environment,
    )  # fmt: skip
    return run.stdout.split()[-1]


def test_freed_tensor_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    # glibc's default: each 64 MiB block is unmapped on free and faulted in again page by page.
    assert int(_run(_LATER_TENSORS_FAULTS, "default")) > 3 * pages
    # Reused: at most one block's pages are new (the first tensor's block can be placed after a
    # small allocation made while it was in use, so the next one does not start where it did),
    # never four.
    assert int(_run(_LATER_TENSORS_FAULTS, "reuse")) <= pages + pages // 20


_TUNABLES_AFTER_RESTART = """
import os
from panoptic_zoo.acceleration.allocator import restart_with_heap_tunables
restart_with_heap_tunables()
print(os.environ.get("GLIBC_TUNABLES", "-"))
"""


@pytest.mark.parametrize(
    "tunables, after_restart",
    [
        (None, "glibc.malloc.tcache_count=0"),
        ("glibc.malloc.mxfast=0", "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=0"),
        ("glibc.malloc.tcache_count=3", "glibc.malloc.tcache_count=3"),  # the user's count kept
    ],
)
def test_restart_adds_the_thread_cache_setting_to_the_tunables(tunables, after_restart):
    assert _run(_TUNABLES_AFTER_RESTART, tunables=tunables) == after_restart
