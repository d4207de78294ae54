"""Shared fixtures: a tiny shapes dataset, generated and registered once per session; the C
kernels' instruction-set variants."""

from __future__ import annotations

import pytest
import torch
from panoptic_testing import TINY_SHAPES_PREFIX, TINY_SHAPES_SPEC

import panoptic_zoo.config  # noqa: F401  (registers datasets, mappers and models)
from panoptic_zoo.data.datasets import register_shapes
from panoptic_zoo.data.datasets.shapes import ensure_shapes_dataset
from panoptic_zoo.acceleration.class_maps import CClassMapKernels
from panoptic_zoo.acceleration.kernels import CLASS_MAPS, DEFORM_SAMPLING
from panoptic_zoo.postprocess.maps import class_map_kernels

torch.set_num_threads(2)

# The C modules built in an SSE2 and an AVX2 + FMA variant (panoptic_zoo/csrc/instruction_sets.h)
_C_KERNEL_MODULES = (CLASS_MAPS, DEFORM_SAMPLING)


@pytest.fixture(params=["pytorch", "best", "baseline"])
def c_kernels(request):
    """The test runs on PyTorch's paths, then with the acceleration's C kernels (the class-map
    kernels in effect) in their best variant for this CPU (AVX2 + FMA where it has them), then
    in their SSE2 baseline."""
    if request.param == "pytorch":
        yield request.param
        return
    if any(module is None for module in _C_KERNEL_MODULES):
        pytest.skip("the C kernels are not built")
    for module in _C_KERNEL_MODULES:
        module.use_instruction_set(request.param == "best")
    with class_map_kernels(CClassMapKernels()):
        yield request.param
    for module in _C_KERNEL_MODULES:
        module.use_instruction_set(True)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> dict[str, str]:
    """Generate and register the tiny shapes dataset; returns its dataset names and root."""
    root = tmp_path_factory.mktemp("datasets") / "shapes_tiny"
    ensure_shapes_dataset(root, TINY_SHAPES_SPEC)
    register_shapes(TINY_SHAPES_PREFIX, TINY_SHAPES_SPEC, root)
    return {
        "train": f"{TINY_SHAPES_PREFIX}_train_panoptic",
        "val": f"{TINY_SHAPES_PREFIX}_val_panoptic",
        "root": str(root),
    }
