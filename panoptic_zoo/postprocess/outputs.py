"""
The output contract of every method: per image, a dict

* ``panoptic_seg``: ``(segment_ids, segments_info)``; ``segment_ids`` an integer (H, W) tensor,
  0 = void; ``segments_info`` one dict per segment with ``id`` (>= 1, unique), ``category_id``
  (separated ids: things ``0..T-1``, stuff ``1..S``) and ``isthing``; thing segments carry a
  ``score`` (panoptic AP);
* ``sem_seg``: (1 + S, H, W) floating-point scores, class 0 = all things merged;
* ``instances``: detectron2 ``Instances`` of image size (H, W) with ``pred_boxes``, ``scores``
  and ``pred_classes``.

The trainer's evaluators, the visualizer, the demo and the deployed runtime read only these.
The checks look at types, shapes and ``segments_info``, never at every pixel, so they cost
nothing next to the post-processing.
"""

from __future__ import annotations

import torch
from detectron2.structures import Boxes, Instances

__all__ = ["check_panoptic_output", "panoptic_output"]

_SEGMENT_KEYS = ("id", "category_id", "isthing")
_INSTANCE_FIELDS = ("pred_boxes", "scores", "pred_classes")


def panoptic_output(
    panoptic_seg: tuple[torch.Tensor, list[dict]], sem_seg: torch.Tensor, instances: Instances
) -> dict:
    """One image's output dict, checked by :func:`check_panoptic_output`."""
    output = {"panoptic_seg": panoptic_seg, "sem_seg": sem_seg, "instances": instances}
    check_panoptic_output(output)
    return output


def check_panoptic_output(output: dict, image_size: tuple[int, int] | None = None) -> None:
    """
    Raises ValueError naming the key and what it should be unless ``output`` keeps the
    contract of this module (at ``image_size`` (H, W) when given).
    """
    missing = [key for key in ("panoptic_seg", "sem_seg", "instances") if key not in output]
    if missing:
        raise ValueError(f"a method's output lacks {missing}; it has {sorted(output)}")
    panoptic_seg = output["panoptic_seg"]
    if not isinstance(panoptic_seg, tuple) or len(panoptic_seg) != 2:
        raise ValueError("output 'panoptic_seg' must be the pair (segment_ids, segments_info)")
    segment_ids, segments_info = panoptic_seg
    if (
        not isinstance(segment_ids, torch.Tensor)
        or segment_ids.dim() != 2
        or segment_ids.dtype.is_floating_point
        or segment_ids.dtype == torch.bool
    ):
        raise ValueError(
            "output 'panoptic_seg' segment ids must be an integer (H, W) tensor; got "
            f"{_describe(segment_ids)}"
        )
    size = tuple(segment_ids.shape)
    if image_size is not None and size != tuple(image_size):
        raise ValueError(f"output 'panoptic_seg' is {size}, the image {tuple(image_size)}")
    _check_segments_info(segments_info)
    sem_seg = output["sem_seg"]
    if (
        not isinstance(sem_seg, torch.Tensor)
        or sem_seg.dim() != 3
        or not sem_seg.dtype.is_floating_point
        or tuple(sem_seg.shape[1:]) != size
    ):
        raise ValueError(
            f"output 'sem_seg' must be floating-point (1 + S, {size[0]}, {size[1]}) scores like "
            f"the segment ids; got {_describe(sem_seg)}"
        )
    instances = output["instances"]
    if not isinstance(instances, Instances) or tuple(instances.image_size) != size:
        got = instances.image_size if isinstance(instances, Instances) else type(instances)
        raise ValueError(f"output 'instances' must be Instances of image size {size}; got {got}")
    absent = [field for field in _INSTANCE_FIELDS if not instances.has(field)]
    if absent or not isinstance(instances.pred_boxes, Boxes):
        raise ValueError(
            f"output 'instances' needs {list(_INSTANCE_FIELDS)} (pred_boxes as Boxes); it has "
            f"{sorted(instances.get_fields())}"
        )


def _check_segments_info(segments_info) -> None:
    if not isinstance(segments_info, list):
        raise ValueError(
            f"output 'panoptic_seg' segments_info must be a list, got {type(segments_info)}"
        )
    ids = set()
    for segment in segments_info:
        absent = [key for key in _SEGMENT_KEYS if key not in segment]
        if absent:
            raise ValueError(f"output segments_info entry {segment} lacks {absent}")
        if not isinstance(segment["id"], int) or segment["id"] < 1 or segment["id"] in ids:
            raise ValueError(
                f"output segments_info ids must be distinct integers >= 1 (0 is void); got "
                f"{segment['id']!r} in {segment}"
            )
        ids.add(segment["id"])
        if segment["isthing"] and "score" not in segment:
            raise ValueError(f"output thing segment {segment} lacks its 'score' (panoptic AP)")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
