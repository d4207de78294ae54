"""Input batches for the meta-architectures that are not detectron2 R-CNNs."""

from __future__ import annotations

import torch
from detectron2.structures import ImageList

__all__ = ["normalized_image_batch"]


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
