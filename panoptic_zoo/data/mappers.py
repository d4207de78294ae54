"""
Dataset mappers, picked by name from ``cfg.INPUT.DATASET_MAPPER_NAME`` through
:data:`DATASET_MAPPER_REGISTRY`, so a method brings its own mapper without touching the trainer.

* ``DatasetMapper``: detectron2's own, for datasets with instance ``annotations`` and
  ``sem_seg_file_name`` (e.g. detectron2's ``*_panoptic_separated`` COCO datasets).
* ``COCOPanopticDatasetMapper``: for any COCO-panoptic-format dataset (``pan_seg_file_name`` +
  ``segments_info``): derives Panoptic FPN's targets, instances (boxes, classes, bit masks) and
  a semantic map with all things merged into class 0, from the panoptic PNG itself, after
  checking that the PNG and its ``segments_info`` agree.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from detectron2.utils.file_io import PathManager
from detectron2.utils.registry import Registry
from PIL import Image, ImageOps, UnidentifiedImageError

from .datasets.panoptic import AnnotationError

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "build_dataset_mapper",
    "build_panoptic_augmentations",
    "open_image_checked",
    "read_image_checked",
    "read_label_png",
    "read_panoptic_png",
    "map_panoptic_image",
    "COCOPanopticDatasetMapper",
]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Dataset mappers: callables built as ``mapper(cfg, is_train)`` that turn a dataset dict into
model inputs. The mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME`` is used for training and
(with ``is_train=False``) for evaluation.
"""
DATASET_MAPPER_REGISTRY.register(DatasetMapper)


# Mappers renamed since configs were first written: old name -> new name.
_RENAMED_MAPPERS = {"PanopticFPNDatasetMapper": "COCOPanopticDatasetMapper"}


def build_dataset_mapper(cfg, is_train: bool):
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name in _RENAMED_MAPPERS:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME: {name} was renamed; set it to {_RENAMED_MAPPERS[name]}"
        )
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train)


# What a corrupt, truncated or hostile image file makes PIL raise while opening and decoding it.
_UNREADABLE_IMAGE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,  # a header claiming a huge size
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
)
# Modes and PNG raw modes of more than 8 bits per channel: converting them to 8-bit RGB would clip
# (16-bit grayscale becomes nearly all white) or garble (48-bit RGB), silently.
_HIGH_BIT_DEPTH_MODES = ("I", "F")


def open_image_checked(file_name: str) -> Image.Image:
    """
    The decoded image of ``file_name`` with its EXIF orientation applied, as detectron2's
    ``read_image`` does, after checking it has 8 bits per channel. Every failure names the file.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            raw_modes = " ".join(str(tile[3]) for tile in image.tile)
            if image.mode.startswith(_HIGH_BIT_DEPTH_MODES) or ";16" in raw_modes:
                raise AnnotationError(
                    f"{file_name} has more than 8 bits per channel (mode {image.mode} "
                    f"{raw_modes}); convert it to 8-bit, detectron2 would clip it silently"
                )
            image.load()
            return ImageOps.exif_transpose(image)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image file {file_name} does not exist") from e
    except AnnotationError:
        raise  # a ValueError, but already the clear error
    except _UNREADABLE_IMAGE_ERRORS as e:
        raise AnnotationError(
            f"{file_name} is not a readable image ({type(e).__name__}: {e})"
        ) from e


def read_image_checked(file_name: str, format: str | None = None) -> np.ndarray:
    """detectron2's ``read_image`` (EXIF orientation, format), checked by open_image_checked."""
    return utils.convert_PIL_to_numpy(open_image_checked(file_name), format)


def read_label_png(file_name: str) -> np.ndarray:
    """
    The label values of a semantic segmentation PNG: one 8-bit channel, read as stored (the
    indices of a palette PNG, not its colors), as detectron2's ``SemSegEvaluator`` reads them.
    """
    image = open_image_checked(file_name)
    if image.mode not in ("L", "P"):
        raise AnnotationError(
            f"{file_name}: a semantic label PNG must have one 8-bit channel (mode L or P), "
            f"got mode {image.mode}; converting it would turn colors into wrong labels"
        )
    return np.asarray(image, dtype=np.uint8)


# Panoptic PNGs hold ids as R + 256 G + 256^2 B: an RGB image, or a palette of RGB colors.
_PANOPTIC_PNG_MODES = ("RGB", "RGBA", "P")


def read_panoptic_png(dataset_dict: dict[str, Any], expected_shape: tuple[int, int]) -> np.ndarray:
    """
    Segment ids (R + 256 G + 256^2 B) of a dataset dict's panoptic PNG, checked against its
    ``segments_info`` and the image size.
    """
    file_name = dataset_dict["pan_seg_file_name"]
    image = open_image_checked(file_name)
    if image.mode not in _PANOPTIC_PNG_MODES:
        raise AnnotationError(
            f"{file_name}: a panoptic PNG must be 8-bit RGB (ids R + 256 G + 256^2 B), got "
            f"mode {image.mode}"
        )
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255:
        raise AnnotationError(
            f"{file_name}: panoptic PNG has transparent pixels; ids are RGB only, so its alpha "
            "channel cannot be meant as void or anything else: save it as RGB"
        )
    rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    if rgb.shape[:2] != tuple(expected_shape):
        raise AnnotationError(
            f"{file_name}: panoptic PNG is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but image "
            f"{dataset_dict['file_name']} is {expected_shape[1]}x{expected_shape[0]}"
        )
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    present = set(np.unique(ids).tolist()) - {0}
    annotated = {s["id"] for s in dataset_dict["segments_info"]}
    if present - annotated:
        raise AnnotationError(
            f"{file_name}: segment ids {_few(present - annotated)} appear in the PNG but not "
            "in its segments_info (they would be trained as void)"
        )
    if annotated - present:
        raise AnnotationError(
            f"{file_name}: segments_info lists ids {_few(annotated - present)} that do not "
            "appear in the PNG"
        )
    return ids


def build_panoptic_augmentations(cfg, is_train: bool) -> list:
    """
    detectron2's resize (+ flip in training), with ``INPUT.CROP`` applied after the resize and
    before the flip in training: crops of a rescaled image, as Cityscapes and Panoptic-DeepLab
    training do (detectron2's ``DatasetMapper`` crops before resizing instead).
    """
    augmentations = utils.build_augmentation(cfg, is_train)
    if cfg.INPUT.CROP.ENABLED and is_train:
        augmentations.insert(1, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    return augmentations


def _few(ids: set[int], limit: int = 10) -> str:
    """The sorted ids, only the first ``limit`` of them when there are more (e.g. a lossy PNG)."""
    ids = sorted(ids)
    return str(ids) if len(ids) <= limit else f"{ids[:limit]} (and {len(ids) - limit} more)"


def map_panoptic_image(
    dataset_dict: dict[str, Any],
    augmentations: T.AugmentationList,
    image_format: str,
    is_train: bool,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """
    The first half of every panoptic mapper: a copy of ``dataset_dict`` with the checked, augmented
    ``image`` tensor, and (for training) the panoptic PNG's segment ids augmented together with it.
    At test time the ids are None and the annotations are dropped from the copy.
    """
    dataset_dict = copy.deepcopy(dataset_dict)
    image = read_image_checked(dataset_dict["file_name"], format=image_format)
    utils.check_image_size(dataset_dict, image)
    segment_ids = read_panoptic_png(dataset_dict, image.shape[:2]) if is_train else None
    # float64 holds every 24-bit id exactly and goes through detectron2's nearest resize.
    aug_input = T.AugInput(
        image, sem_seg=None if segment_ids is None else segment_ids.astype(np.float64)
    )
    augmentations(aug_input)
    dataset_dict["image"] = _image_tensor(aug_input.image)
    if segment_ids is None:
        for key in ("pan_seg_file_name", "segments_info", "sem_seg_file_name", "annotations"):
            dataset_dict.pop(key, None)
        return dataset_dict, None
    return dataset_dict, np.rint(aug_input.sem_seg).astype(np.int64)


@DATASET_MAPPER_REGISTRY.register()
class COCOPanopticDatasetMapper:
    """
    Image + panoptic PNG -> ``image``, ``instances`` (non-crowd things: ``gt_boxes``,
    ``gt_classes``, ``gt_masks``) and ``sem_seg`` (stuff ids ``1..S``, every thing pixel 0,
    void 255), augmented together. At test time only the image is loaded.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        ignore_label: int = 255,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_panoptic_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict, segment_ids = map_panoptic_image(
            dataset_dict, self.augmentations, self.image_format, self.is_train
        )
        if segment_ids is None:
            return dataset_dict
        dataset_dict["instances"], dataset_dict["sem_seg"] = self._targets(
            segment_ids, dataset_dict.pop("segments_info"), segment_ids.shape
        )
        dataset_dict.pop("pan_seg_file_name")
        dataset_dict.pop("sem_seg_file_name", None)
        return dataset_dict

    def _targets(self, segment_ids: np.ndarray, segments_info: list[dict], image_shape):
        sem_seg = np.full(segment_ids.shape, self.ignore_label, dtype=np.int64)
        classes, masks = [], []
        for segment in segments_info:
            mask = segment_ids == segment["id"]
            if not segment["isthing"]:
                sem_seg[mask] = segment["category_id"]
                continue
            sem_seg[mask] = 0  # crowd regions are things too: Panoptic FPN's "things" class
            if segment.get("iscrowd", 0) or not mask.any():
                continue
            classes.append(segment["category_id"])
            masks.append(mask)
        instances = Instances(image_shape)
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        if masks:
            bit_masks = BitMasks(torch.from_numpy(np.stack(masks)))
        else:
            bit_masks = BitMasks(torch.zeros((0, *image_shape), dtype=torch.bool))
        instances.gt_masks = bit_masks
        instances.gt_boxes = bit_masks.get_bounding_boxes()
        return instances, torch.from_numpy(sem_seg)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
