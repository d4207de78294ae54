"""
panoptic_zoo: UPSNet, Panoptic FPN, Panoptic-DeepLab and Panoptic FCN as detectron2
meta-architectures sharing one trainer, one data pipeline and one set of evaluators.

Importing ``panoptic_zoo.config`` (``get_cfg``), ``panoptic_zoo.engine`` or
``panoptic_zoo.modeling`` registers the datasets, dataset mappers and models with detectron2.
The package itself imports nothing heavy, so that the light command lines (the data check on
dataset files) start without torch and detectron2.
"""

__version__ = "0.1.0"
__all__ = ["get_cfg"]


def __getattr__(name: str):
    if name == "get_cfg":
        from .config import get_cfg

        return get_cfg
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
