"""
The per-pixel argmax and log-sum-exps over classes of post-processing in C
(``_class_maps.c``, rows split over PyTorch's OpenMP threads, an AVX2 + FMA variant where the
CPU has them), installed for an optimized model's forward (:func:`use_class_map_kernels`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..postprocess.maps import class_map_kernels
from .kernels import CLASS_MAPS

__all__ = ["CClassMapKernels", "use_class_map_kernels"]


class CClassMapKernels:
    """:class:`~panoptic_zoo.postprocess.maps.ClassMapKernels` in C, for float32 [C, H, W] CPU
    logits with contiguous columns."""

    @staticmethod
    def takes(logits: torch.Tensor) -> bool:
        return (
            logits.device.type == "cpu"
            and logits.dtype == torch.float32
            and logits.dim() == 3
            and logits.stride(-1) == 1
            and logits.numel() > 0
        )

    @staticmethod
    def argmax(logits: torch.Tensor) -> torch.Tensor:
        """``torch.argmax(logits, dim=0)``, bit for bit (first maximum, NaN largest)."""
        best = torch.empty(logits.shape[1:], dtype=torch.long)
        CLASS_MAPS.argmax(logits.detach().numpy(), best.numpy(), torch.get_num_threads())
        return best

    @staticmethod
    def logsumexps(logits: torch.Tensor, group: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-sum-exp over all classes and over ``group`` (two passes over the logits,
        its own vectorized exp), to float rounding of ``torch.logsumexp``."""
        classes, height, width = logits.shape
        group_classes = range(classes)[group]
        in_group = logits.new_empty((height, width))
        outside = logits.new_empty((height, width))
        CLASS_MAPS.logsumexps(
            logits.detach().numpy(), group_classes.start, group_classes.stop, in_group.numpy(),
            outside.numpy(), torch.get_num_threads(),
        )  # fmt: skip
        return torch.logaddexp(in_group, outside), in_group


class _ClassMapKernelsInForward:
    """Forward hooks that put :class:`CClassMapKernels` in effect for the model's forward."""

    def __init__(self):
        self.contexts = []

    def enter(self, module, args):
        context = class_map_kernels(CClassMapKernels())
        context.__enter__()
        self.contexts.append(context)

    def exit(self, module, args, output):
        self.contexts.pop().__exit__(None, None, None)


def use_class_map_kernels(model: nn.Module) -> bool:
    """Run ``model``'s post-processing argmax and log-sum-exps over classes through the C
    kernels (forward hooks); returns whether they are used (False where not built)."""
    if CLASS_MAPS is None:
        return False
    hooks = _ClassMapKernelsInForward()
    model.register_forward_pre_hook(hooks.enter)
    model.register_forward_hook(hooks.exit, always_call=True)
    return True
