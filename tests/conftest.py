"""Shared fixtures: a tiny shapes dataset, generated and registered once per session."""

from __future__ import annotations

import pytest
import torch
from panoptic_testing import TINY_SHAPES_PREFIX, TINY_SHAPES_SPEC

import panoptic_zoo  # noqa: F401  (registers datasets, mappers and models)
from panoptic_zoo.data.datasets import register_shapes
from panoptic_zoo.data.datasets.shapes import ensure_shapes_dataset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> dict[str, str]:
    """Generate and register the tiny shapes dataset; returns its dataset names and root."""
    root = tmp_path_factory.mktemp("datasets") / "shapes_tiny"
    ensure_shapes_dataset(root, TINY_SHAPES_SPEC)
    register_shapes(TINY_SHAPES_PREFIX, TINY_SHAPES_SPEC, root)
    return {
        "train": f"{TINY_SHAPES_PREFIX}_train_panoptic",
        "val": f"{TINY_SHAPES_PREFIX}_val_panoptic",
        "root": str(root),
    }
