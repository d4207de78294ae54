"""
Panoptic quality and the evaluators.

:mod:`.pq`, :mod:`.panoptic_png` and the command line :mod:`.pq_compute` need only NumPy,
Pillow and libdeflate; the evaluators (detectron2's ``DatasetEvaluator``) are loaded on first use.
"""

import importlib

__all__ = ["PanopticEvaluator", "PanopticStats", "build_evaluators"]

_SUBMODULE_OF = {
    "PanopticEvaluator": ".panoptic_evaluator",
    "PanopticStats": ".pq",
    "build_evaluators": ".build",
}


def __getattr__(name: str):
    if name in _SUBMODULE_OF:
        return getattr(importlib.import_module(_SUBMODULE_OF[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
