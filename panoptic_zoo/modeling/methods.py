"""
The panoptic methods, one entry per meta-architecture: what tables call it, the shapes config
that trains it at test size and its COCO config. Each method's subpackage registers itself on
import, so the benchmark (its default configs), the model zoo's table and the contract test
(tests/modeling/test_method_contract.py) find every method here, a new one included, without
a list of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PanopticMethod", "method_of", "register_method", "registered_methods"]


@dataclass(frozen=True)
class PanopticMethod:
    name: str  # as papers and tables write it, e.g. "Panoptic-DeepLab"
    meta_architecture: str  # its key in detectron2's META_ARCH_REGISTRY
    # Configs relative to configs/: the small one trained by the tests and the shapes demo, and
    # the COCO one the benchmark times by default.
    shapes_config: str
    coco_config: str


_METHODS: dict[str, PanopticMethod] = {}


def register_method(method: PanopticMethod) -> PanopticMethod:
    """Adds ``method``; a second method with the same meta-architecture is an error."""
    if method.meta_architecture in _METHODS:
        raise ValueError(f"a method is already registered for {method.meta_architecture}")
    _METHODS[method.meta_architecture] = method
    return method


def method_of(meta_architecture: str) -> PanopticMethod:
    """The method of ``meta_architecture`` (``cfg.MODEL.META_ARCHITECTURE``)."""
    if meta_architecture not in _METHODS:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE {meta_architecture!r} is not a registered panoptic method; "
            f"registered: {sorted(_METHODS)} (panoptic_zoo.modeling.methods.register_method)"
        )
    return _METHODS[meta_architecture]


def registered_methods() -> list[PanopticMethod]:
    """Every registered method, in registration order."""
    return list(_METHODS.values())


# Panoptic FPN is detectron2's own PanopticFPN, configured by YAML alone: no subpackage.
register_method(
    PanopticMethod(
        name="Panoptic FPN",
        meta_architecture="PanopticFPN",
        shapes_config="shapes/panoptic_fpn_R_18.yaml",
        coco_config="coco/panoptic_fpn_R_50_1x.yaml",
    )
)
