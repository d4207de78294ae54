"""What the layers' C kernels (deformable sampling, depthwise convolution) take: float32 CPU
tensors. Their modules route other calls to PyTorch's or torchvision's ops with these checks."""

from __future__ import annotations

import torch

__all__ = ["check_float32_cpu", "float32_cpu_or_absent"]


def float32_cpu_or_absent(tensor: torch.Tensor | None) -> bool:
    """Whether a C kernel takes this argument: absent (None), or float32 on the CPU."""
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
