"""
Your own COCO-panoptic-format dataset, registered without Python: from the config's
``DATASETS.REGISTER`` node or the ``--dataset`` option of the command-line tools.

    DATASETS:
      REGISTER:
        my_train:
          IMAGE_ROOT: "data/images"
          PANOPTIC_JSON: "data/panoptic_train.json"    # COCO panoptic: images, annotations, categories
          PANOPTIC_ROOT: "data/panoptic_train"          # its PNGs
          INSTANCES_JSON: ""                            # optional: COCO instances, for box/mask AP
          SEM_SEG_ROOT: ""                              # optional: derived from the panoptic PNGs

The classes (separated ids, ``isthing``, colors) come from the panoptic JSON's ``categories``.
Without ``SEM_SEG_ROOT``, the semantic PNGs the mIoU evaluator and detectron2's semantic mappers
read (stuff classes 1..S, all things 0, void 255) are derived once from the panoptic PNGs into a
cache directory named by the panoptic JSON's content, and moved into place atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ...utils.checksum import sha256_of
from ..panoptic_format import (
    AnnotationError,
    add_dataset_argument,
    read_categories,
    separated_metadata,
)
from .panoptic import load_panoptic_json, register_panoptic_dataset

__all__ = [
    "DATASET_KEYS",
    "add_dataset_argument",
    "register_coco_panoptic",
    "register_from_config",
    "set_dataset_arguments",
]

REQUIRED_KEYS = ("IMAGE_ROOT", "PANOPTIC_JSON", "PANOPTIC_ROOT")
DATASET_KEYS = (*REQUIRED_KEYS, "INSTANCES_JSON", "SEM_SEG_ROOT")


def derived_sem_seg_root(panoptic_json: str) -> Path:
    """Cache directory of the semantic PNGs derived from ``panoptic_json`` (by its content)."""
    base = os.environ.get("PANOPTIC_ZOO_DATASETS")
    cache = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache")
    cache = cache.expanduser() if base else cache.expanduser() / "panoptic_zoo" / "datasets"
    return (cache / f"semantic-{sha256_of(panoptic_json)[:16]}").absolute()


def derive_semantic_pngs(
    panoptic_json: str, image_root: str, panoptic_root: str, metadata: dict, target: Path
) -> None:
    """Write the semantic PNGs of every annotation into ``target`` unless it is complete."""
    if (target / "DONE").is_file():
        return
    try:
        records = load_panoptic_json(panoptic_json, image_root, panoptic_root, metadata)
    except AnnotationError as e:
        # The annotations without problems; the data check reports the others, with the rest.
        records = [record for record in e.records if "pan_seg_file_name" in record]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for record in records:
            try:
                rgb = np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB"), np.int64)
            except (OSError, ValueError):
                continue  # the data check reports it, with the other problems
            ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
            labels = np.full(ids.shape, 255, dtype=np.uint8)
            for segment in record["segments_info"]:
                labels[ids == segment["id"]] = 0 if segment["isthing"] else segment["category_id"]
            name = os.path.basename(record["pan_seg_file_name"])
            Image.fromarray(labels).save(staging / name)
        (staging / "DONE").write_text(panoptic_json + "\n")
        try:
            os.replace(staging, target)  # atomic; a concurrent writer may have won
        except OSError:
            if not (target / "DONE").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def register_coco_panoptic(
    name: str,
    image_root: str,
    panoptic_json: str,
    panoptic_root: str,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
) -> None:
    """
    Register a COCO-panoptic-format dataset, classes from the JSON's ``categories``. Relative
    paths are taken from the working directory now, so that later loads do not depend on it.
    """
    image_root, panoptic_json, panoptic_root = map(
        os.path.abspath, (image_root, panoptic_json, panoptic_root)
    )
    instances_json = os.path.abspath(instances_json) if instances_json else None
    sem_seg_root = os.path.abspath(sem_seg_root) if sem_seg_root else None
    metadata = separated_metadata(read_categories(panoptic_json))
    prepare = None
    if not sem_seg_root:
        target = derived_sem_seg_root(panoptic_json)
        sem_seg_root = str(target)

        def prepare():
            derive_semantic_pngs(panoptic_json, image_root, panoptic_root, metadata, target)

    register_panoptic_dataset(
        name, metadata, image_root=image_root, panoptic_root=panoptic_root,
        panoptic_json=panoptic_json, instances_json=instances_json,
        sem_seg_root=sem_seg_root, prepare=prepare,
    )  # fmt: skip
    MetadataCatalog.get(name).set(registered_from=panoptic_json)
    if prepare is not None:
        # The semantic PNGs are needed by the evaluator before (or without) any load.
        prepare()


def register_from_config(cfg: CfgNode) -> list[str]:
    """Register every dataset of ``cfg.DATASETS.REGISTER``; returns their names."""
    names = []
    for name, node in cfg.DATASETS.REGISTER.items():
        where = f"DATASETS.REGISTER.{name}"
        if not isinstance(node, dict):
            raise ValueError(f"{where} must be a node of {', '.join(DATASET_KEYS)}")
        unknown = sorted(set(node) - set(DATASET_KEYS))
        missing = [key for key in REQUIRED_KEYS if not node.get(key)]
        if unknown or missing:
            raise ValueError(
                f"{where}: unknown keys {unknown} / missing keys {missing}; expected "
                f"{', '.join(REQUIRED_KEYS)} and optionally INSTANCES_JSON, SEM_SEG_ROOT"
            )
        if name in DatasetCatalog.list():
            registered = MetadataCatalog.get(name).get("registered_from")
            if registered == os.path.abspath(node.PANOPTIC_JSON):
                names.append(name)
                continue
            raise ValueError(
                f"{where}: a dataset named {name!r} is already registered"
                + (f" from {registered}" if registered else " (a builtin dataset)")
                + "; choose another name"
            )
        register_coco_panoptic(
            name, node.IMAGE_ROOT, node.PANOPTIC_JSON, node.PANOPTIC_ROOT,
            node.get("INSTANCES_JSON") or None, node.get("SEM_SEG_ROOT") or None,
        )  # fmt: skip
        names.append(name)
    return names


def set_dataset_arguments(cfg: CfgNode, datasets: list[list[str]]) -> None:
    """Add the ``--dataset`` entries to ``cfg.DATASETS.REGISTER`` (``cfg`` not frozen)."""
    for name, image_root, panoptic_json, panoptic_root in datasets:
        cfg.DATASETS.REGISTER[name] = CfgNode(
            {
                "IMAGE_ROOT": image_root,
                "PANOPTIC_JSON": panoptic_json,
                "PANOPTIC_ROOT": panoptic_root,
            }
        )
