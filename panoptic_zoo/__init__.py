"""
panoptic_zoo: UPSNet, Panoptic FPN, Panoptic-DeepLab and Panoptic FCN as detectron2
meta-architectures sharing one trainer, one data pipeline and one set of evaluators.

Importing the package registers its datasets, dataset mappers and models with detectron2.
"""

from . import data, modeling  # noqa: F401  (registration side effects)
from .config import get_cfg

__version__ = "0.1.0"
__all__ = ["get_cfg"]
