"""
Datasets registered when ``panoptic_zoo`` is imported.

* The embedded shapes dataset, generated on first use (see :mod:`.shapes`):
  ``shapes_{split}_panoptic`` (COCO panoptic + semantic PNGs + COCO instances, for all methods)
  and detectron2's own ``shapes_{split}_panoptic_separated`` / ``_stuffonly`` views of it.
* COCO panoptic: detectron2 registers ``coco_2017_{train,val}_panoptic_separated`` (Panoptic FPN's
  setting) itself, under ``$DETECTRON2_DATASETS`` (default ``./datasets``); the same files with
  panoptic PNGs are ``coco_2017_{train,val}_panoptic_png_separated``.
* Cityscapes panoptic: ``cityscapes_fine_panoptic_{train,val}_separated``, the layout of
  detectron2's ``cityscapes_fine_panoptic_*`` with separated ids (see :mod:`.panoptic`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_panoptic_separated
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES, COCO_CATEGORIES
from detectron2.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic

from .panoptic import register_panoptic_dataset, separated_metadata, set_panoptic_metadata
from .shapes import SHAPES_CATEGORIES, ShapesSpec, default_shapes_root, ensure_shapes_dataset

__all__ = [
    "register_shapes",
    "register_coco_panoptic_png_separated",
    "register_cityscapes_panoptic_separated",
    "register_all",
]


def register_shapes(
    prefix: str = "shapes", spec: ShapesSpec = ShapesSpec(), root: str | Path | None = None
) -> list[str]:
    """
    Register every split of a shapes dataset as ``{prefix}_{split}_panoptic`` plus detectron2's
    ``_separated``/``_stuffonly`` views. Files are generated on the first load (in ``root``,
    default: ``$PANOPTIC_ZOO_DATASETS`` or the user's cache). Returns the panoptic names.
    """
    root = Path(root) if root is not None else default_shapes_root(spec)
    prepare = functools.partial(ensure_shapes_dataset, root, spec)
    metadata = separated_metadata(SHAPES_CATEGORIES)
    names = []
    for split, _ in spec.splits:
        name = f"{prefix}_{split}_panoptic"
        paths = {
            "image_root": str(root / "images" / split),
            "panoptic_root": str(root / f"panoptic_{split}"),
            "panoptic_json": str(root / f"panoptic_{split}.json"),
        }
        instances_json = str(root / f"instances_{split}.json")
        sem_seg_root = str(root / f"panoptic_stuff_{split}")
        register_panoptic_dataset(
            name, metadata, **paths, instances_json=instances_json,
            sem_seg_root=sem_seg_root, prepare=prepare,
        )  # fmt: skip
        register_coco_panoptic_separated(
            name, metadata, paths["image_root"], paths["panoptic_root"],
            paths["panoptic_json"], sem_seg_root, instances_json,
        )  # fmt: skip
        for view in (f"{name}_separated", f"{name}_stuffonly"):
            _generate_before_loading(view, prepare)
        names.append(name)
    return names


def _generate_before_loading(name: str, prepare) -> None:
    load = DatasetCatalog.pop(name)

    def prepare_then_load():
        prepare()
        return load()

    DatasetCatalog.register(name, prepare_then_load)


_CITYSCAPES_PANOPTIC_SPLITS = {
    "train": ("cityscapes/leftImg8bit/train", "cityscapes/gtFine/cityscapes_panoptic_train"),
    "val": ("cityscapes/leftImg8bit/val", "cityscapes/gtFine/cityscapes_panoptic_val"),
}


def register_cityscapes_panoptic_separated(root: str) -> None:
    """
    ``cityscapes_fine_panoptic_{split}_separated``: Cityscapes panoptic (as prepared by
    cityscapesscripts' ``createPanopticImgs``) with separated ids, read by detectron2's loader.
    """
    metadata = separated_metadata(CITYSCAPES_CATEGORIES)
    root_source = (
        f"DETECTRON2_DATASETS is {os.environ['DETECTRON2_DATASETS']!r}"
        if "DETECTRON2_DATASETS" in os.environ
        else "DETECTRON2_DATASETS is unset"
    )
    root_hint = f"the datasets root is {os.path.abspath(root)}: {root_source}"
    for split, (image_dir, gt_dir) in _CITYSCAPES_PANOPTIC_SPLITS.items():
        name = f"cityscapes_fine_panoptic_{split}_separated"
        image_dir, gt_dir = os.path.join(root, image_dir), os.path.join(root, gt_dir)
        gt_json = gt_dir + ".json"
        DatasetCatalog.register(
            name,
            functools.partial(
                _load_cityscapes_panoptic_separated, image_dir, gt_dir, gt_json, metadata,
                root_hint=root_hint,
            ),  # fmt: skip
        )
        set_panoptic_metadata(name, metadata, image_dir, gt_dir, gt_json)


def _load_cityscapes_panoptic_separated(image_dir, gt_dir, gt_json, metadata, root_hint=""):
    # detectron2's loader only says "run createPanopticImgs.py", even when the whole dataset
    # root is wrong: name what is missing and where the root came from first.
    for path, what in ((image_dir, "image directory"), (gt_dir, "panoptic PNG directory")):
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"Cityscapes {what} {path} does not exist ({root_hint}); set "
                "DETECTRON2_DATASETS, before importing panoptic_zoo, to the directory holding "
                "cityscapes/ (docs/DATASETS.md)"
            )
    if not os.path.isfile(gt_json):
        raise FileNotFoundError(
            f"Cityscapes panoptic JSON {gt_json} does not exist: run cityscapesscripts' "
            "createPanopticImgs (docs/DATASETS.md)"
        )
    # detectron2's loader finds the files (images sit in per-city folders) and converts category
    # ids in place. Let it keep dataset ids (identity maps) so that `isthing` can still be told
    # apart: in separated ids, things and stuff overlap.
    thing_ids = metadata["thing_dataset_id_to_contiguous_id"]
    stuff_ids = metadata["stuff_dataset_id_to_contiguous_id"]
    identity = {
        "thing_dataset_id_to_contiguous_id": {k: k for k in thing_ids},
        "stuff_dataset_id_to_contiguous_id": {k: k for k in stuff_ids},
    }
    dataset_dicts = load_cityscapes_panoptic(image_dir, gt_dir, gt_json, identity)
    for record in dataset_dicts:
        for segment in record["segments_info"]:
            segment["isthing"] = segment["category_id"] in thing_ids
            ids = thing_ids if segment["isthing"] else stuff_ids
            segment["category_id"] = ids[segment["category_id"]]
    return dataset_dicts


def register_coco_panoptic_png_separated(root: str) -> None:
    """
    ``coco_2017_{train,val}_panoptic_png_separated``: COCO panoptic (panoptic PNGs + JSON, plus
    the instances JSON and ``panoptic_stuff_*`` semantic PNGs for AP and mIoU) through the checked
    loader, with separated ids. Methods that build targets from the panoptic PNG (UPSNet,
    Panoptic-DeepLab) train on these; detectron2's ``*_panoptic_separated`` dicts lack the PNG.
    """
    metadata = separated_metadata(COCO_CATEGORIES)
    coco = os.path.join(root, "coco")
    for split in ("train", "val"):
        register_panoptic_dataset(
            f"coco_2017_{split}_panoptic_png_separated",
            metadata,
            image_root=os.path.join(coco, f"{split}2017"),
            panoptic_root=os.path.join(coco, f"panoptic_{split}2017"),
            panoptic_json=os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
            instances_json=os.path.join(coco, "annotations", f"instances_{split}2017.json"),
            sem_seg_root=os.path.join(coco, f"panoptic_stuff_{split}2017"),
        )


def register_all() -> None:
    register_shapes()
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    register_coco_panoptic_png_separated(root)
    register_cityscapes_panoptic_separated(root)
