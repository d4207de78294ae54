"""
detectron2's released Panoptic FPN and Panoptic-DeepLab checkpoints to this project's.

* Panoptic FPN: this project's Panoptic FPN *is* detectron2's ``PanopticFPN`` on the same
  separated COCO ids, so every tensor keeps its name and value; converting only turns the
  model zoo pickle (numpy arrays, ``__author__``) into a weights-only ``.pth``.
* Panoptic-DeepLab (detectron2's ``projects/Panoptic-DeepLab``): the modules carry the same
  names (``backbone.*``, ``sem_seg_head.*``, ``ins_embed_head.*``; ``PanopticDeepLabModel``
  subclasses detectron2's heads). Only the semantic predictor's classes are reordered:
  detectron2's model predicts the dataset's standard contiguous ids (Cityscapes: 11 stuff
  classes then 8 things, in trainId order), this project the unified ids (things first, then
  stuff; docs/methods/panoptic_deeplab.md), so the rows of ``sem_seg_head.predictor`` are
  permuted. For COCO the two orders coincide.
"""

from __future__ import annotations

import torch

from .common import Conversion, ConversionError

__all__ = [
    "convert_detectron2_panoptic_deeplab",
    "convert_detectron2_panoptic_fpn",
    "unified_class_order",
]

SEMANTIC_PREDICTOR = ("sem_seg_head.predictor.weight", "sem_seg_head.predictor.bias")


def _without_cell_anchors(weights: dict[str, torch.Tensor]) -> Conversion:
    """Old detectron2 files store the anchor generator's cell anchors, which are not weights."""
    anchors = [k for k in weights if "anchor_generator.cell_anchors" in k]
    kept = {k: v for k, v in weights.items() if k not in anchors}
    return Conversion(kept, unused=anchors)


def convert_detectron2_panoptic_fpn(weights: dict[str, torch.Tensor]) -> Conversion:
    """Identity on the weights (names and values); see the module docstring."""
    return _without_cell_anchors(weights)


def unified_class_order(source_metadata, target_metadata) -> list[int]:
    """
    For each unified class of this project (things, then stuff, from ``target_metadata`` in
    separated ids), the channel of the same dataset category in a detectron2 model trained on
    ``source_metadata`` (standard ids: ``thing_dataset_id_to_contiguous_id`` and
    ``stuff_dataset_id_to_contiguous_id`` together cover every class).
    """
    source = {
        **source_metadata.thing_dataset_id_to_contiguous_id,
        **source_metadata.stuff_dataset_id_to_contiguous_id,
    }
    things = sorted(
        target_metadata.thing_dataset_id_to_contiguous_id.items(), key=lambda item: item[1]
    )
    stuff = sorted(
        ((d, c) for d, c in target_metadata.stuff_dataset_id_to_contiguous_id.items() if c > 0),
        key=lambda item: item[1],
    )
    missing = [d for d, _ in things + stuff if d not in source]
    if missing:
        raise ConversionError(f"dataset ids {missing} have no class in the source model")
    return [source[dataset_id] for dataset_id, _ in things + stuff]


def convert_detectron2_panoptic_deeplab(
    weights: dict[str, torch.Tensor], class_order: list[int]
) -> Conversion:
    """
    Same names; the semantic predictor's output channels reordered to ``class_order`` (from
    :func:`unified_class_order`). Source channels not in ``class_order`` are dropped and noted.
    """
    missing = [k for k in SEMANTIC_PREDICTOR if k not in weights]
    if missing:
        raise ConversionError(f"not a Panoptic-DeepLab checkpoint: no {missing}")
    num_source = weights[SEMANTIC_PREDICTOR[1]].shape[0]
    if sorted(set(class_order)) != sorted(class_order) or max(class_order) >= num_source:
        raise ConversionError(
            f"class order {class_order} is not a selection of the {num_source} source classes"
        )
    conversion = _without_cell_anchors(weights)
    index = torch.tensor(class_order)
    for key in SEMANTIC_PREDICTOR:
        conversion.state_dict[key] = weights[key].index_select(0, index)
    dropped = sorted(set(range(num_source)) - set(class_order))
    if dropped:
        conversion.notes.append(f"semantic classes {dropped} of the source have no target class")
    return conversion
