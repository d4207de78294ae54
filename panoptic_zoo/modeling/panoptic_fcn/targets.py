"""
Training targets of Panoptic FCN for one padded image, built on the model's device from the
mapper's ``instances`` (bit masks, thing classes) and ``sem_seg`` (stuff 1..S, things 0,
void = ignore value):

* things are assigned to kernel-generator levels by sqrt(mask area) ranges (overlapping, so a
  thing may sit on two levels); each assignment gets a CornerNet-radius Gaussian at the mask's
  mass center on its class channel;
* stuff targets are the one-hot semantic map averaged down to each level (soft near borders);
* mask targets are the thing masks and the one-hot stuff maps averaged down to the feature
  encoder's stride.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ThingAssignment", "PanopticFCNTargets", "PanopticFCNTargetGenerator", "gaussian_radius"]


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """
    CornerNet's radius: the largest corner displacement for which a box of ``height`` x
    ``width`` still has IoU >= ``min_overlap`` with itself (smallest of the three cases).
    """
    a1 = 1
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


@dataclass
class ThingAssignment:
    """The things assigned to one level: index into the image's things, class, center, radius."""

    instance: torch.Tensor  # (n,) int64
    classes: torch.Tensor  # (n,) int64
    center_yx: torch.Tensor  # (n, 2) int64, level cells
    radius: torch.Tensor  # (n,) int64, level cells


@dataclass
class PanopticFCNTargets:
    thing_heatmaps: list[torch.Tensor]  # per level (T, h_l, w_l)
    stuff_maps: list[torch.Tensor]  # per level (S + 1, h_l, w_l), soft one-hot
    stuff_valid: list[torch.Tensor]  # per level (h_l, w_l): fraction of non-void pixels
    assignments: list[ThingAssignment]  # per level
    thing_masks: torch.Tensor  # (N, H_e, W_e) soft masks at the encoder stride
    stuff_classes: torch.Tensor  # (M,) stuff classes (0..S) present in the image
    stuff_masks: torch.Tensor  # (M, H_e, W_e)


class PanopticFCNTargetGenerator:
    def __init__(
        self,
        *,
        num_thing_classes: int,
        num_stuff_classes: int,
        level_strides: list[int],
        instance_scales: list[tuple[float, float]],
        encoder_stride: int,
        min_overlap: float,
        ignore_value: int,
    ):
        if len(level_strides) != len(instance_scales):
            raise ValueError(
                f"{len(level_strides)} kernel-generator levels but {len(instance_scales)} "
                "MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.INSTANCE_SCALES ranges"
            )
        self.num_thing_classes = num_thing_classes
        self.num_stuff_classes = num_stuff_classes
        self.level_strides = level_strides
        self.instance_scales = instance_scales
        self.encoder_stride = encoder_stride
        self.min_overlap = min_overlap
        self.ignore_value = ignore_value

    def __call__(
        self,
        masks: torch.Tensor,
        classes: torch.Tensor,
        sem_seg: torch.Tensor,
        level_sizes: list[tuple[int, int]],
        encoder_size: tuple[int, int],
    ) -> PanopticFCNTargets:
        """
        Args:
            masks: (N, H, W) bool thing masks, padded to the batch's input size.
            classes: (N,) thing classes.
            sem_seg: (H, W) int stuff map (0 = things, 1..S stuff, ignore value = void), padded
                with the ignore value.
            level_sizes: (h_l, w_l) of each kernel-generator level.
            encoder_size: (H_e, W_e) of the feature encoder's output.
        """
        labels = sem_seg[sem_seg != self.ignore_value]
        if len(labels) and int(labels.max()) > self.num_stuff_classes:
            raise ValueError(
                f"semantic label {int(labels.max())} but MODEL.PANOPTIC_FCN.NUM_STUFF_CLASSES is "
                f"{self.num_stuff_classes} (stuff ids are 1..S, 0 = things)"
            )
        if len(classes) and int(classes.max()) >= self.num_thing_classes:
            raise ValueError(
                f"thing class {int(classes.max())} but MODEL.PANOPTIC_FCN.NUM_THING_CLASSES is "
                f"{self.num_thing_classes}"
            )
        masks = masks.float()
        heatmaps, assignments = self._thing_centers(masks, classes, level_sizes)
        valid = (sem_seg != self.ignore_value).float()
        one_hot = (
            F.one_hot(
                torch.where(sem_seg == self.ignore_value, 0, sem_seg).long(),
                self.num_stuff_classes + 1,
            )
            .permute(2, 0, 1)
            .float()
            * valid
        )
        stuff_maps, stuff_valid = [], []
        for stride, size in zip(self.level_strides, level_sizes):
            stuff_maps.append(_downsample(one_hot, size, stride))
            stuff_valid.append(_downsample(valid[None], size, stride)[0])
        present = one_hot.flatten(1).any(dim=1).nonzero()[:, 0]
        return PanopticFCNTargets(
            thing_heatmaps=heatmaps,
            stuff_maps=stuff_maps,
            stuff_valid=stuff_valid,
            assignments=assignments,
            thing_masks=_downsample(masks, encoder_size, self.encoder_stride),
            stuff_classes=present,
            stuff_masks=_downsample(one_hot[present], encoder_size, self.encoder_stride),
        )

    def _thing_centers(self, masks, classes, level_sizes):
        device = masks.device
        _, height, width = masks.shape
        area = masks.flatten(1).sum(dim=1)
        scale = area.sqrt()
        ys = torch.arange(height, device=device, dtype=torch.float32)
        xs = torch.arange(width, device=device, dtype=torch.float32)
        safe_area = area.clamp(min=1)
        # Mass center, in input pixels (pixel centers at +0.5).
        center_y = (masks.sum(dim=2) * ys).sum(dim=1) / safe_area + 0.5
        center_x = (masks.sum(dim=1) * xs).sum(dim=1) / safe_area + 0.5
        rows, cols = masks.any(dim=2), masks.any(dim=1)
        box_h = _extent(rows)
        box_w = _extent(cols)

        heatmaps, assignments = [], []
        for stride, (low, high), (h, w) in zip(
            self.level_strides, self.instance_scales, level_sizes
        ):
            heatmap = masks.new_zeros((self.num_thing_classes, h, w))
            chosen = ((scale >= low) & (scale <= high) & (area > 0)).nonzero()[:, 0]
            cy = (center_y[chosen] / stride).long().clamp(0, h - 1)
            cx = (center_x[chosen] / stride).long().clamp(0, w - 1)
            radius = (
                gaussian_radius(box_h[chosen] / stride, box_w[chosen] / stride, self.min_overlap)
                .long()
                .clamp(min=0)
            )
            if len(chosen):
                gaussians = _gaussians(cy, cx, radius, h, w)  # (n, h, w)
                # Overlapping Gaussians of one class keep their maximum (CornerNet).
                heatmap.view(len(heatmap), -1).scatter_reduce_(
                    0, classes[chosen, None].expand(-1, h * w), gaussians.flatten(1), "amax"
                )
            heatmaps.append(heatmap)
            assignments.append(
                ThingAssignment(chosen, classes[chosen], torch.stack([cy, cx], dim=1), radius)
            )
        return heatmaps, assignments


def _extent(occupied: torch.Tensor) -> torch.Tensor:
    """Length of the occupied span of each row of (N, L) booleans (0 for empty rows)."""
    index = torch.arange(occupied.shape[1], device=occupied.device)
    first = torch.where(occupied, index, occupied.shape[1]).min(dim=1).values
    last = torch.where(occupied, index, -1).max(dim=1).values
    return (last - first + 1).clamp(min=0).float()


def _gaussians(cy, cx, radius, height, width) -> torch.Tensor:
    """(n, height, width) CornerNet Gaussians (sigma = diameter / 6), zero outside the radius."""
    ys = torch.arange(height, device=cy.device)[None, :, None]
    xs = torch.arange(width, device=cy.device)[None, None, :]
    dy = ys - cy[:, None, None]
    dx = xs - cx[:, None, None]
    r = radius[:, None, None]
    sigma = (2 * r + 1).float() / 6
    values = torch.exp(-(dy**2 + dx**2).float() / (2 * sigma**2))
    inside = (dy.abs() <= r) & (dx.abs() <= r)
    return torch.where(inside, values, torch.zeros_like(values))


def _downsample(maps: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Average (C, H, W) maps over stride x stride cells into ``size`` (cell i covers input
    pixels [i * stride, (i + 1) * stride); the input is zero-padded or cropped to fit)."""
    h, w = size
    padded = F.pad(maps, (0, w * stride - maps.shape[2], 0, h * stride - maps.shape[1]))
    return F.avg_pool2d(padded[None], stride)[0]
