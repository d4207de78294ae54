"""
Training targets of Panoptic FCN for one image, built on the model's device from the mapper's
``instances`` (bit masks, boxes, thing classes) and ``sem_seg`` (stuff 1..S, things 0, void =
ignore value), both at the image's own (unpadded) size, as the official ``GenerateGT``:

* masks and the one-hot semantic map are resampled bilinearly to the feature encoder's stride
  (``int(size / stride + 0.5)``) and zero-padded to the encoder's (padded) size: these are the
  segment targets, and void and padding count as background of every class;
* things are assigned to kernel-generator levels by sqrt(box area) ranges (overlapping, so a
  thing may sit on two levels); each assignment gets a CornerNet-radius Gaussian (sigma =
  diameter / 3) on its class channel at the mass center of its resampled mask (every cell
  above 0), rescaled to the level;
* stuff position targets are the padded encoder-stride one-hot map resampled bilinearly to each
  level, with values below 0.5 set to 0; the classes left on a level are that level's stuff.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ThingAssignment", "PanopticFCNTargets", "PanopticFCNTargetGenerator", "gaussian_radius"]

# Stuff cells whose resampled class fraction is below this are negatives (official GenerateGT).
STUFF_POSITIVE_FRACTION = 0.5
# sigma = diameter / this, for the thing-center Gaussians (official GAUSSIAN_SIGMA).
GAUSSIAN_SIGMA_DIVISOR = 3


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
    stuff_maps: list[torch.Tensor]  # per level (S + 1, h_l, w_l): 0 or a fraction >= 0.5
    stuff_classes: list[torch.Tensor]  # per level: stuff classes (0..S) with a positive cell
    assignments: list[ThingAssignment]  # per level
    thing_masks: torch.Tensor  # (N, H_e, W_e) soft masks at the encoder stride
    stuff_masks: torch.Tensor  # (S + 1, H_e, W_e) soft one-hot at the encoder stride


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
        self.num_thing_classes = num_thing_classes
        self.num_stuff_classes = num_stuff_classes
        if len(level_strides) != len(instance_scales):
            raise ValueError(
                f"{len(level_strides)} kernel-generator levels but {len(instance_scales)} "
                "MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.INSTANCE_SCALES ranges"
            )
        self.level_strides = level_strides  # also what inference crops each level by
        self.instance_scales = instance_scales
        self.encoder_stride = encoder_stride
        self.min_overlap = min_overlap
        self.ignore_value = ignore_value

    def __call__(
        self,
        masks: torch.Tensor,
        boxes: torch.Tensor,
        classes: torch.Tensor,
        sem_seg: torch.Tensor,
        padded_size: tuple[int, int],
        level_sizes: list[tuple[int, int]],
        encoder_size: tuple[int, int],
    ) -> PanopticFCNTargets:
        """
        Args:
            masks: (N, H, W) bool thing masks at the image's size.
            boxes: (N, 4) thing boxes (x0, y0, x1, y1) in input pixels.
            classes: (N,) thing classes.
            sem_seg: (H, W) int stuff map (0 = things, 1..S stuff, ignore value = void).
            padded_size: (H_p, W_p) of the padded batch the network ran on.
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
        thing_masks = self._to_encoder(masks.float(), encoder_size)
        heatmaps, assignments = self._thing_centers(
            thing_masks, boxes.float(), classes, padded_size, level_sizes, encoder_size
        )
        void = sem_seg == self.ignore_value
        one_hot = F.one_hot(
            torch.where(void, 0, sem_seg).long(), self.num_stuff_classes + 1
        ).permute(2, 0, 1).float() * (~void)  # fmt: skip
        stuff_masks = self._to_encoder(one_hot, encoder_size)
        stuff_maps, stuff_classes = [], []
        for size in level_sizes:
            level = F.interpolate(
                stuff_masks[None], size=size, mode="bilinear", align_corners=False
            )
            level = level[0].clamp(max=1.0)
            level = torch.where(level < STUFF_POSITIVE_FRACTION, torch.zeros_like(level), level)
            stuff_maps.append(level)
            stuff_classes.append(level.flatten(1).any(dim=1).nonzero()[:, 0])
        return PanopticFCNTargets(
            thing_heatmaps=heatmaps,
            stuff_maps=stuff_maps,
            stuff_classes=stuff_classes,
            assignments=assignments,
            thing_masks=thing_masks,
            stuff_masks=stuff_masks,
        )

    def _to_encoder(self, maps: torch.Tensor, encoder_size: tuple[int, int]) -> torch.Tensor:
        """(C, H, W) maps resampled to the encoder stride and zero-padded to ``encoder_size``."""
        h, w = maps.shape[-2:]
        size = (int(h / self.encoder_stride + 0.5), int(w / self.encoder_stride + 0.5))
        if size[0] > encoder_size[0] or size[1] > encoder_size[1]:
            raise ValueError(
                f"targets of a {h}x{w} image at stride {self.encoder_stride} are {size}, larger "
                f"than the encoder's {tuple(encoder_size)}: pass the image's own (unpadded) masks"
            )
        out = maps.new_zeros((len(maps), *encoder_size))
        if len(maps):
            resized = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)
            out[:, : size[0], : size[1]] = resized[0]
        return out

    def _thing_centers(self, masks, boxes, classes, padded_size, level_sizes, encoder_size):
        device = masks.device
        occupied = masks > 0
        count = occupied.flatten(1).sum(dim=1)
        ys = torch.arange(masks.shape[1], device=device, dtype=torch.float32)
        xs = torch.arange(masks.shape[2], device=device, dtype=torch.float32)
        safe_count = count.clamp(min=1).float()
        # Mass center of the resampled mask (its cells above 0), in encoder cells.
        center_y = (occupied.sum(dim=2).float() * ys).sum(dim=1) / safe_count
        center_x = (occupied.sum(dim=1).float() * xs).sum(dim=1) / safe_count
        box_w = boxes[:, 2] - boxes[:, 0]
        box_h = boxes[:, 3] - boxes[:, 1]
        scale = (box_w * box_h).sqrt()

        heatmaps, assignments = [], []
        for (low, high), (h, w) in zip(self.instance_scales, level_sizes):
            heatmap = masks.new_zeros((self.num_thing_classes, h, w))
            # A thing that vanishes at the encoder stride has no center (official: NaN, cast
            # to cell 0) and an empty mask target; it is left out.
            chosen = ((scale >= low) & (scale <= high) & (count > 0)).nonzero()[:, 0]
            cy = (center_y[chosen] * (h / encoder_size[0])).long().clamp(0, h - 1)
            cx = (center_x[chosen] * (w / encoder_size[1])).long().clamp(0, w - 1)
            radius = gaussian_radius(
                box_h[chosen] * (h / padded_size[0]),
                box_w[chosen] * (w / padded_size[1]),
                self.min_overlap,
            ).clamp(min=0).long()  # fmt: skip
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


def _gaussians(cy, cx, radius, height, width) -> torch.Tensor:
    """(n, height, width) CornerNet Gaussians (sigma = diameter / 3), zero outside the radius."""
    ys = torch.arange(height, device=cy.device)[None, :, None]
    xs = torch.arange(width, device=cy.device)[None, None, :]
    dy = ys - cy[:, None, None]
    dx = xs - cx[:, None, None]
    r = radius[:, None, None]
    sigma = (2 * r + 1).double() / GAUSSIAN_SIGMA_DIVISOR
    # float64 then float32: the official values, computed in NumPy, to the bit.
    values = torch.exp(-(dy**2 + dx**2).double() / (2 * sigma**2)).float()
    inside = (dy.abs() <= r) & (dx.abs() <= r)
    return torch.where(inside, values, torch.zeros_like(values))
