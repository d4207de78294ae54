"""Input batches for the meta-architectures that are not detectron2 R-CNNs."""

from __future__ import annotations

import torch
from detectron2.structures import ImageList

__all__ = ["indices_by_padded_size", "normalized_image_batch"]


def normalized_image_batch(
    batched_inputs: list[dict],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
) -> ImageList:
    """
    The images of ``batched_inputs`` on ``pixel_mean``'s device, normalized and zero-padded to a
    multiple of ``size_divisibility``: what ``GeneralizedRCNN.preprocess_image`` does for the
    R-CNN based methods.
    """
    images = [(x["image"].to(pixel_mean.device) - pixel_mean) / pixel_std for x in batched_inputs]
    return ImageList.from_tensors(images, size_divisibility)


def indices_by_padded_size(
    image_sizes: list[tuple[int, int]], size_divisibility: int
) -> dict[tuple[int, int], list[int]]:
    """
    The indices of images of ``image_sizes`` (unpadded) grouped by the size each pads to alone
    (a multiple of ``size_divisibility``), in order: for methods whose per-image output would
    change with a batch's padding (GroupNorm statistics, borders, attention see it), run each
    group apart.
    """
    divisibility = max(1, size_divisibility)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (h, w) in enumerate(image_sizes):
        padded = (-(-h // divisibility) * divisibility, -(-w // divisibility) * divisibility)
        groups.setdefault(padded, []).append(index)
    return groups
