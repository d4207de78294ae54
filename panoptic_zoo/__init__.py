"""
panoptic_zoo: UPSNet, Panoptic FPN, Panoptic-DeepLab, Panoptic FCN and Mask2Former as
detectron2 meta-architectures sharing one trainer, one data pipeline and one set of evaluators.

Importing the package itself loads neither torch nor detectron2, so that light command lines
such as ``python -m panoptic_zoo.evaluation.pq_compute`` start fast. Importing
:mod:`panoptic_zoo.config` (``get_cfg``, also reachable as ``panoptic_zoo.get_cfg``) registers
the datasets, dataset mappers and models with detectron2.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["get_cfg"]


def __getattr__(name: str):
    # Loaded on first use: get_cfg needs detectron2 and torch.
    if name == "get_cfg":
        return importlib.import_module(".config", __name__).get_cfg
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
