"""The acceleration layer's C kernels (optional at install; None where not built), and what
they and its ONNX Runtime layers take: float32 CPU tensors."""

from __future__ import annotations

import torch

from ..utils.c_extensions import load_c_extension

__all__ = [
    "CLASS_MAPS",
    "DEFORM_SAMPLING",
    "check_float32_cpu",
    "float32_cpu_or_absent",
]

CLASS_MAPS = load_c_extension("panoptic_zoo.acceleration._class_maps")
DEFORM_SAMPLING = load_c_extension("panoptic_zoo.acceleration._deform_sampling")


def float32_cpu_or_absent(tensor: torch.Tensor | None) -> bool:
    """Whether a C kernel or an ONNX Runtime layer takes this argument: absent (None), or
    float32 on the CPU."""
    return tensor is None or (tensor.device.type == "cpu" and tensor.dtype == torch.float32)


def check_float32_cpu(op: str, fallback: str, **tensors: torch.Tensor | None) -> None:
    """Raise a ValueError naming the first of ``tensors`` that ``op`` does not take, and
    ``fallback``, the op to use instead."""
    for name, tensor in tensors.items():
        if not float32_cpu_or_absent(tensor):
            raise ValueError(
                f"{op} takes float32 CPU tensors; {name} is {tensor.dtype} on {tensor.device} "
                f"(use {fallback})"
            )
