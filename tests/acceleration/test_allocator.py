"""Freed CPU tensor memory is reused without page faults once the heap settings are applied."""

from __future__ import annotations

import subprocess
import sys

import pytest

from panoptic_zoo.acceleration import allocator

# Writes a 64 MiB tensor and frees it, then four more, and prints the page faults of those four.
# It loads what the entry points that set the heap have loaded (panoptic_zoo.config): with torch
# alone, all four were faulted in again (measured).
_LATER_TENSORS_FAULTS = """
import resource, sys, torch
import panoptic_zoo.config
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


def _later_tensors_faults(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", _LATER_TENSORS_FAULTS, mode],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="the settings are glibc's")
@pytest.mark.xfail(
    strict=False,
    reason="known regression of the redesign: with panoptic_zoo.config and the compiled "
    "extensions loaded, about half the runs fault all four blocks in again (measured 65536 "
    "faults in 3 of 6 runs); open in issue 25",
)
def test_freed_tensor_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    # glibc's default: each 64 MiB block is unmapped on free and faulted in again page by page.
    assert _later_tensors_faults("default") > 3 * pages
    # Reused: at most one block's pages are new (a small allocation between two tensors can
    # take the start of a freed block, so the next one is placed after it once), never four.
    assert _later_tensors_faults("reuse") <= pages + pages // 20
