"""Replacing a model's modules by type, the replacement holding the same parameters."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["adopt_state", "replace_modules"]


def adopt_state(replacement: nn.Module, original: nn.Module) -> nn.Module:
    """Give ``replacement`` the very parameters, buffers and child modules of ``original``
    (shared, not copied: its state dict and the model's checkpoint keys are unchanged) and its
    training mode; returns ``replacement``."""
    for name, parameter in original.named_parameters(recurse=False):
        setattr(replacement, name, parameter)
    for name, buffer in original.named_buffers(recurse=False):
        replacement.register_buffer(name, buffer, persistent=name not in original._non_persistent_buffers_set)
    for name, child in original.named_children():
        setattr(replacement, name, child)
    return replacement.train(original.training)


def replace_modules(
    model: nn.Module,
    select: Callable[[nn.Module], bool],
    replacement: Callable[[nn.Module], nn.Module],
) -> int:
    """Put ``replacement(m)`` in the place of every submodule ``m`` of ``model`` that
    ``select`` takes, in place; returns how many."""
    selected = [(name, m) for name, m in model.named_modules() if name and select(m)]
    for name, module in selected:
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, replacement(module))
    return len(selected)
