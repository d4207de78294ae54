"""The acceleration layer's C kernels (optional at install; None where not built), and what its
ONNX Runtime layers take: float32 CPU tensors."""

from __future__ import annotations

import torch

from ..utils.c_extensions import load_c_extension

__all__ = [
    "CLASS_MAPS",
    "float32_cpu_or_absent",
]

CLASS_MAPS = load_c_extension("panoptic_zoo.acceleration._class_maps")


def float32_cpu_or_absent(tensor: torch.Tensor | None) -> bool:
    """Whether an ONNX Runtime layer takes this argument: absent (None), or float32 on the
    CPU."""
    return tensor is None or (tensor.device.type == "cpu" and tensor.dtype == torch.float32)
