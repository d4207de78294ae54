"""
Loading and registering panoptic datasets in COCO panoptic format, with checked annotations.

Every panoptic dataset that panoptic_zoo registers uses *separated* contiguous ids, the
convention of detectron2's ``register_coco_panoptic_separated`` and Panoptic FPN:
thing categories map to ``0 .. T-1`` and stuff categories to ``1 .. S``, where stuff class 0
stands for "any thing" in semantic heads that merge all things into one class. Each segment of
a dataset dict carries ``isthing`` so the two id spaces never mix, and
:class:`detectron2.evaluation.COCOPanopticEvaluator` maps predictions back to dataset ids
through the same metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from ..panoptic_format import AnnotationError, load_json, parse_panoptic_json, separated_metadata

__all__ = [
    "AnnotationError",
    "separated_metadata",
    "load_panoptic_json",
    "register_panoptic_dataset",
    "set_panoptic_metadata",
]


def _require_file(path: str, what: str, hint: str) -> None:
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist. {hint}")


def _require_dir(path: str, what: str, hint: str) -> None:
    if not PathManager.isdir(path):
        raise FileNotFoundError(f"{what} directory {path} does not exist. {hint}")


def load_panoptic_json(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    metadata: dict[str, Any],
    sem_seg_root: str | None = None,
) -> list[dict[str, Any]]:
    """
    Read a COCO panoptic JSON into detectron2 dataset dicts (``file_name``, ``image_id``,
    ``height``, ``width``, ``pan_seg_file_name``, ``segments_info`` with contiguous
    ``category_id`` and ``isthing``, and ``sem_seg_file_name`` when ``sem_seg_root`` is given).

    Unlike detectron2's loader, image file names come from the JSON's ``images`` (any
    extension), and malformed records raise one :class:`AnnotationError` listing every problem
    (:func:`~panoptic_zoo.data.panoptic_format.parse_panoptic_json`), each naming the file, the
    record, the field and the fix.
    """
    hint = "Check the dataset layout in docs/DATASETS.md (and $DETECTRON2_DATASETS)."
    _require_file(json_file, "panoptic annotation file", hint)
    _require_dir(image_root, "image", hint)
    _require_dir(panoptic_root, "panoptic PNG", hint)
    if sem_seg_root is not None:
        _require_dir(sem_seg_root, "semantic PNG", hint)
    records, problems = parse_panoptic_json(
        load_json(json_file), json_file, image_root, panoptic_root, metadata, sem_seg_root
    )
    if len(problems) == 1:
        raise AnnotationError(problems[0], problems, records)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise AnnotationError(
            f"{json_file} has {len(problems)} problems:\n{listed}", problems, records
        )
    return records


def register_panoptic_dataset(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
    prepare: Callable[[], Any] | None = None,
) -> None:
    """
    Register a COCO-panoptic-format dataset under ``name``, loaded by :func:`load_panoptic_json`.

    The metadata points the evaluators at their ground truth: ``panoptic_json``/``panoptic_root``
    for PQ, ``json_file`` (COCO instances) for AP and ``sem_seg_root`` for mIoU, when given.
    ``prepare`` runs before the first load (e.g. to generate a synthetic dataset on first use).
    """

    def load() -> list[dict[str, Any]]:
        if prepare is not None:
            prepare()
        return load_panoptic_json(panoptic_json, image_root, panoptic_root, metadata, sem_seg_root)

    DatasetCatalog.register(name, load)
    set_panoptic_metadata(
        name, metadata, image_root, panoptic_root, panoptic_json, instances_json, sem_seg_root
    )


def set_panoptic_metadata(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
) -> None:
    """The metadata of a panoptic dataset: where each evaluator finds its ground truth."""
    extra = {}
    if instances_json is not None:
        extra["json_file"] = instances_json
    if sem_seg_root is not None:
        extra["sem_seg_root"] = sem_seg_root
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **extra,
        **metadata,
    )
