"""The class-map C kernels' build: OpenMP through PyTorch's own runtime. (Their results:
tests/postprocess/test_panoptic_postprocess.py, on every instruction-set variant.)"""

from pathlib import Path

import pytest

from panoptic_zoo.acceleration.kernels import CLASS_MAPS


@pytest.mark.skipif(CLASS_MAPS is None, reason="the C kernels are not built")
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_the_kernels_share_torchs_openmp_runtime():
    """The kernels are built with OpenMP and must run on PyTorch's threads: one OpenMP runtime
    in the process, not a second pool of threads that competes with PyTorch's."""
    runtimes = {
        line.split()[-1]
        for line in Path("/proc/self/maps").read_text().splitlines()
        if any(name in line for name in ("libgomp", "libiomp", "libomp"))
    }
    assert len(runtimes) == 1, runtimes
