"""
Datasets, dataset mappers and the data check.

The names below are imported on first use (with them, the builtin datasets and the mappers are
registered with detectron2), so that ``python -m panoptic_zoo.data.check`` on dataset files runs
without torch and detectron2.
"""

import importlib

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "CheckedDatasetMapper",
    "COCOPanopticDatasetMapper",
    "build_dataset_mapper",
]

# Where each public name lives.
_MODULES = {
    "DATASET_MAPPER_REGISTRY": ".mappers",
    "CheckedDatasetMapper": ".checked_dataset_mapper",
    "COCOPanopticDatasetMapper": ".mappers",
    "build_dataset_mapper": ".mappers",
}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Every mapper registered and every builtin dataset, whichever name is asked for first.
    for module in (".datasets", ".mappers", ".checked_dataset_mapper"):
        importlib.import_module(module, __name__)
    return getattr(importlib.import_module(_MODULES[name], __name__), name)
