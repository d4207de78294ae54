"""
Opt-in CPU inference acceleration, applied to a built and loaded model by one call,
:func:`optimize_for_cpu`, selected by the ``ACCELERATION.CPU`` config node
(:func:`add_acceleration_config`). The methods themselves are plain PyTorch / detectron2
modules; this package replaces some of their modules by faster ones holding the same
parameters, folds batch norms, runs the backbone channels-last and installs C kernels (optional
at install). :func:`restart_with_heap_tunables` and :func:`reuse_freed_heap_memory` are
process-wide heap settings for entry points.
See docs/ACCELERATION.md for what each option does and measures.
"""

from .allocator import restart_with_heap_tunables, reuse_freed_heap_memory
from .config import add_acceleration_config
from .optimize import optimize_for_cpu

__all__ = [
    "add_acceleration_config",
    "optimize_for_cpu",
    "restart_with_heap_tunables",
    "reuse_freed_heap_memory",
]
