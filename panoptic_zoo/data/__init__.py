from . import datasets  # noqa: F401  (registers the builtin datasets)
from .checked_dataset_mapper import CheckedDatasetMapper
from .mappers import DATASET_MAPPER_REGISTRY, COCOPanopticDatasetMapper, build_dataset_mapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "CheckedDatasetMapper",
    "COCOPanopticDatasetMapper",
    "build_dataset_mapper",
]
