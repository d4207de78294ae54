from . import datasets  # noqa: F401  (registers the builtin datasets)
from .instance_mapper import CheckedDatasetMapper
from .mappers import DATASET_MAPPER_REGISTRY, PanopticFPNDatasetMapper, build_dataset_mapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "CheckedDatasetMapper",
    "PanopticFPNDatasetMapper",
    "build_dataset_mapper",
]
