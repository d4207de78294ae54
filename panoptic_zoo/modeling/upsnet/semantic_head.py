"""
UPSNet's semantic head: one deformable-convolution subnetwork shared by the FPN levels, each
level upsampled to stride 4, concatenated, and a 1x1 convolution to stuff + thing logits (stuff
channels first); trained with
pixel-wise cross-entropy plus the RoI loss inside ground-truth boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.structures import Boxes
from torch import nn
from torchvision.ops import roi_align

from ...layers import DeformableConv3x3
from .panoptic_head import mean_cross_entropy

__all__ = [
    "ConcatenatedLevelsPredictor",
    "UPSNetSemanticHead",
    "crop_semantic_target",
    "inclusive_corners",
    "semantic_roi_loss",
]


class ConcatenatedLevelsPredictor(nn.Module):
    """
    UPSNet's semantic predictor: feature levels resized (bilinearly) to one size, concatenated,
    and a 1x1 convolution; the parameters are ``nn.Conv2d(levels * in_channels, out_channels,
    1)``'s, under the same names.
    """

    def __init__(self, in_channels: int, levels: int, out_channels: int):
        super().__init__()
        conv = nn.Conv2d(levels * in_channels, out_channels, 1)  # for its initialization
        self.weight, self.bias = conv.weight, conv.bias
        self.in_channels = in_channels

    def forward(self, levels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Logits [N, out_channels, *size] of ``levels`` [N, in_channels, h, w], in the order
        of the concatenation."""
        expected = self.weight.shape[1] // self.in_channels
        if len(levels) != expected:
            raise ValueError(f"expected {expected} levels, got {len(levels)}")
        resized = [
            level
            if tuple(level.shape[-2:]) == tuple(size)
            else F.interpolate(level, size=size, mode="bilinear", align_corners=False)
            for level in levels
        ]
        return F.conv2d(torch.cat(resized, dim=1), self.weight, self.bias)


class UPSNetSemanticHead(nn.Module):
    """Semantic logits (stuff classes first, then thing classes) at ``common_stride``."""

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_stuff_classes: int,
        num_thing_classes: int,
        conv_dims: list[int],
        deformable: bool = True,
        norm: str = "",
        common_stride: int = 4,
    ):
        super().__init__()
        if not input_shape:
            raise ValueError("UPSNet's semantic head needs at least one input feature")
        channels = {spec.channels for spec in input_shape.values()}
        if len(channels) != 1:
            raise ValueError(
                "UPSNet's semantic head shares one subnetwork across levels, so its input "
                f"features must have equal channels; got {channels}"
            )
        if not conv_dims:
            raise ValueError("MODEL.UPSNET.SEMANTIC_HEAD.CONV_DIMS must not be empty")
        self.in_features = list(input_shape)
        self.strides = [input_shape[f].stride for f in self.in_features]
        self.common_stride = common_stride
        if min(self.strides) != common_stride:
            raise ValueError(
                f"the finest semantic head input has stride {min(self.strides)}, but "
                f"MODEL.UPSNET.SEMANTIC_HEAD.COMMON_STRIDE is {common_stride}"
            )
        self.num_stuff_classes = num_stuff_classes
        layers = []
        in_channels = channels.pop()
        for out_channels in conv_dims:
            conv = (
                DeformableConv3x3(in_channels, out_channels, bias=not norm)
                if deformable
                else Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
            )
            # The official initialization: He-normal weights, zero biases (offsets start at 0).
            nn.init.kaiming_normal_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers += [conv, get_norm(norm, out_channels) or nn.Identity(), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.subnetwork = nn.Sequential(*layers)
        self.predictor = ConcatenatedLevelsPredictor(
            in_channels, len(self.in_features), num_stuff_classes + num_thing_classes
        )
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        head = cfg.MODEL.UPSNET.SEMANTIC_HEAD
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.UPSNET.SEMANTIC_HEAD.IN_FEATURES {missing} are not backbone outputs "
                f"({sorted(input_shape)})"
            )
        return {
            "input_shape": {f: input_shape[f] for f in head.IN_FEATURES},
            "num_stuff_classes": cfg.MODEL.UPSNET.NUM_STUFF_CLASSES,
            "num_thing_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": list(head.CONV_DIMS),
            "deformable": head.DEFORMABLE,
            "norm": head.NORM,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        finest = features[self.in_features[self.strides.index(self.common_stride)]]
        levels = [self.subnetwork(features[f]) for f in self.in_features]
        return self.predictor(levels, finest.shape[-2:])


def inclusive_corners(boxes: torch.Tensor) -> torch.Tensor:
    """
    XYXY boxes whose far corner is the last pixel inside (Detectron's convention, which the
    official code uses) from detectron2's, whose far corner is the first pixel past the box.
    """
    return boxes - boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def crop_semantic_target(
    gt_semantic: torch.Tensor, boxes: torch.Tensor, resolution: int
) -> torch.Tensor:
    """
    UPSNet's official RoI-loss ground truth: labels (H, W) in each box (N, 4; XYXY pixels,
    inclusive far corner) with corners rounded half to even, an empty side widened by one
    pixel, and the crop ``[y0, y1) x [x0, x1)`` resized to ``resolution`` x ``resolution``
    by OpenCV's nearest neighbour (source index floor(i * (1 / (resolution / size))), in
    double precision), so labels are never blended.
    """
    corners = boxes.round().long()
    x0, y0, x1, y1 = corners.unbind(dim=1)
    x1 = torch.where(x1 == x0, x1 + 1, x1).clamp(max=gt_semantic.shape[1])
    y1 = torch.where(y1 == y0, y1 + 1, y1).clamp(max=gt_semantic.shape[0])
    steps = torch.arange(resolution, device=boxes.device, dtype=torch.float64)

    def source(start, end):
        size = (end - start).double()
        # Tensor / tensor: a Python number over a tensor multiplies by the reciprocal instead,
        # which rounds differently (and moves some samples by one pixel).
        inverse_scale = torch.full_like(size, float(resolution)) / size
        step = torch.ones_like(size) / inverse_scale
        offsets = (steps[None] * step[:, None]).floor().long()
        return start[:, None] + torch.minimum(offsets, (end - start - 1)[:, None])

    return gt_semantic[source(y0, y1)[:, :, None], source(x0, x1)[:, None, :]]


def semantic_roi_loss(
    logits: torch.Tensor,
    gt_semantic: torch.Tensor,
    gt_boxes: list[Boxes],
    stride: int,
    resolution: int,
    ignore_value: int,
) -> torch.Tensor:
    """
    UPSNet's RoI loss, as officially: each ground-truth box (taken with its inclusive far
    corner) crops the semantic logits (N, C, H/stride, W/stride) with RoIAlign (Detectron's,
    unaligned, 2x2 samples per bin) to ``resolution``^2; the crop is scored by cross-entropy
    against :func:`crop_semantic_target`, averaged over all crop pixels, ignored ones
    included (they add 0). The official code crops the concatenated features and applies the
    1x1 predictor after; both are linear, so the logits are the same.
    """
    boxes = [inclusive_corners(b.tensor.to(logits.dtype)) for b in gt_boxes]
    if sum(len(b) for b in boxes) == 0:
        return logits.sum() * 0.0
    crops = roi_align(
        logits, boxes, output_size=resolution, spatial_scale=1.0 / stride,
        sampling_ratio=2, aligned=False,
    )  # fmt: skip
    targets = torch.cat(
        [crop_semantic_target(gt, b, resolution) for gt, b in zip(gt_semantic, boxes)]
    )
    return mean_cross_entropy(crops, targets, ignore_value)
