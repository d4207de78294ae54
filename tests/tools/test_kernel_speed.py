"""tools/kernel_speed.py on tiny inputs: every path of a place computes what its eager path
computes, and the verdict follows the 1.3x rule."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from detectron2.layers import Conv2d
from panoptic_testing import REPO

from panoptic_zoo.layers import DeformableConv3x3

pytest.importorskip("onnxruntime")
spec = importlib.util.spec_from_file_location("kernel_speed", REPO / "tools" / "kernel_speed.py")
kernel_speed = importlib.util.module_from_spec(spec)
sys.modules["kernel_speed"] = kernel_speed
spec.loader.exec_module(kernel_speed)


def _differences(paths) -> dict[str, float]:
    return kernel_speed.measure("place", paths, {}, repeats=1)["max_abs_difference"]


@torch.no_grad()
def test_every_path_computes_the_same():
    torch.manual_seed(0)
    depthwise = [
        (Conv2d(6, 6, 3, padding=4, dilation=4, groups=6), torch.randn(2, 6, 13, 17)),
        (Conv2d(4, 4, 5, padding=2, groups=4, bias=False), torch.randn(2, 4, 9, 7)),
    ]
    deformable = [(DeformableConv3x3(3, 5, modulated=m), torch.randn(2, 3, 11, 9)) for m in (0, 1)]
    for layer, _ in deformable:
        layer.offset.weight.normal_(0, 1)
    places = [kernel_speed.depthwise_paths(depthwise), kernel_speed.deformable_paths(deformable)]
    places += kernel_speed.class_map_places(7, 3, (9, 11)).values()
    for paths in places:
        assert len(paths) >= 2
        assert max(_differences(paths).values()) < 1e-4


def test_verdict_by_the_rule():
    c = kernel_speed.C_KERNEL
    kept = kernel_speed.verdict({"oneDNN": 2.7, "ONNX Runtime": 1.3, c: 1.0})
    assert kept == {"best_library": "ONNX Runtime", "best_library_over_c": 1.3,
                    "verdict": "keep the C kernel"}  # fmt: skip
    dropped = kernel_speed.verdict({"oneDNN": 2.7, "ONNX Runtime": 1.29, c: 1.0})
    assert dropped["verdict"] == "ONNX Runtime"
    assert kernel_speed.verdict({"torchvision": 3.0, "DeformConv": 2.0})["verdict"] == "DeformConv"
    row = {"place": "p", "layer_calls": 2, "ms": {"oneDNN": 2.7, c: 1.0}, **kernel_speed.verdict(
        {"oneDNN": 2.7, c: 1.0})}  # fmt: skip
    assert kernel_speed.markdown([row]).splitlines()[-1] == (
        "| p | 2 | 1.0 | oneDNN 2.7 | 2.70x | keep the C kernel |"
    )
    # A place without a C kernel (deformable, depthwise): no C column, the fastest library path.
    library = {"oneDNN": 2.7, "ONNX Runtime": 1.3}
    row = {"place": "q", "layer_calls": 6, "ms": library, **kernel_speed.verdict(library)}
    assert kernel_speed.markdown([row]).splitlines()[-1] == (
        "| q | 6 | - | oneDNN 2.7, ONNX Runtime 1.3 | - | ONNX Runtime |"
    )
