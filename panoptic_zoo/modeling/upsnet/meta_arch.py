"""UPSNet (Xiong et al., CVPR 2019) as a detectron2 meta-architecture."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torchvision.ops import nms

from ...postprocess import (
    class_argmax,
    crop_and_resize,
    merged_class_probabilities,
    panoptic_segments,
    remove_overlapping_instances,
    resize_panoptic,
)
from ...utils.chunks import row_chunks
from .panoptic_head import panoptic_logits, panoptic_target, paste_mask_logits
from .semantic_head import UPSNetSemanticHead, semantic_roi_loss

__all__ = ["UPSNet"]

# Ignored pixels of the panoptic target: every non-negative value can be a channel of Z.
_PANOPTIC_IGNORE = -1


# Floats of Z per row chunk of the panoptic head's inference (16 MiB).
Z_CHUNK_FLOATS = 4 * 2**20


@META_ARCH_REGISTRY.register()
class UPSNet(GeneralizedRCNN):
    """
    Mask R-CNN (detectron2's backbone, RPN and ROI heads), UPSNet's deformable semantic head
    and its parameter-free panoptic head, trained jointly.

    Training losses: RPN, box and mask losses, ``loss_sem_seg``, ``loss_sem_seg_roi`` (when
    weighted) and ``loss_panoptic``. Inference returns, per image, ``panoptic_seg``,
    ``sem_seg`` ((S + 1) stuff scores with all things merged into channel 0, the separated-id
    semantic space of the evaluators) and ``instances``.
    """

    @configurable
    def __init__(
        self,
        *,
        semantic_head: UPSNetSemanticHead,
        num_stuff_classes: int,
        semantic_loss_weight: float,
        roi_loss_weight: float,
        roi_resolution: int,
        panoptic_loss_weight: float,
        box_keep_fraction: float,
        score_thresh: float,
        nms_thresh: float,
        overlap_thresh: float,
        stuff_area_limit: int,
        ignore_value: int = 255,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_stuff_classes < 1:
            raise ValueError(
                "MODEL.UPSNET.NUM_STUFF_CLASSES must be the number of stuff classes (the "
                f"separated ids 1..S, without the merged 'things' class); got {num_stuff_classes}"
            )
        if not 0.0 < box_keep_fraction <= 1.0:
            raise ValueError(
                f"MODEL.UPSNET.PANOPTIC_HEAD.BOX_KEEP_FRACTION must be in (0, 1]; got "
                f"{box_keep_fraction}"
            )
        if getattr(self.roi_heads, "mask_pooler", None) is None:
            raise ValueError(
                "UPSNet needs ROI heads with a pooled mask head (e.g. StandardROIHeads with "
                "MODEL.MASK_ON: True): its panoptic head uses the mask logits"
            )
        self.semantic_head = semantic_head
        self.num_stuff_classes = num_stuff_classes
        self.semantic_loss_weight = semantic_loss_weight
        self.roi_loss_weight = roi_loss_weight
        self.roi_resolution = roi_resolution
        self.panoptic_loss_weight = panoptic_loss_weight
        self.box_keep_fraction = box_keep_fraction
        # The unknown class exists only if training ever teaches it (official "enable_void").
        self.with_unknown = box_keep_fraction < 1.0
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.overlap_thresh = overlap_thresh
        self.stuff_area_limit = stuff_area_limit
        self.ignore_value = ignore_value

    @classmethod
    def from_config(cls, cfg):
        if not cfg.MODEL.MASK_ON:
            raise ValueError("UPSNet needs MODEL.MASK_ON: True (its panoptic head uses masks)")
        ret = super().from_config(cfg)
        upsnet = cfg.MODEL.UPSNET
        ret.update(
            {
                "semantic_head": UPSNetSemanticHead(cfg, ret["backbone"].output_shape()),
                "num_stuff_classes": upsnet.NUM_STUFF_CLASSES,
                "semantic_loss_weight": upsnet.SEMANTIC_HEAD.LOSS_WEIGHT,
                "roi_loss_weight": upsnet.SEMANTIC_HEAD.ROI_LOSS_WEIGHT,
                "roi_resolution": upsnet.SEMANTIC_HEAD.ROI_RESOLUTION,
                "panoptic_loss_weight": upsnet.PANOPTIC_HEAD.LOSS_WEIGHT,
                "box_keep_fraction": upsnet.PANOPTIC_HEAD.BOX_KEEP_FRACTION,
                "score_thresh": upsnet.INFERENCE.SCORE_THRESH,
                "nms_thresh": upsnet.INFERENCE.NMS_THRESH,
                "overlap_thresh": upsnet.INFERENCE.OVERLAP_THRESH,
                "stuff_area_limit": upsnet.INFERENCE.STUFF_AREA_LIMIT,
                "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            }
        )
        return ret

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs: dicts of :class:`UPSNetDatasetMapper`: ``image``; in training also
                ``instances`` (with ``gt_masks``) and ``sem_seg`` (stuff then thing classes).
        """
        if not self.training:
            return self.inference(batched_inputs)
        if "sem_seg" not in batched_inputs[0] or "instances" not in batched_inputs[0]:
            raise ValueError(
                "UPSNet trains on 'instances' and an all-class 'sem_seg'; set "
                "INPUT.DATASET_MAPPER_NAME: UPSNetDatasetMapper"
            )
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        gt_semantic = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            self.ignore_value,
        ).tensor

        proposals, losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(detector_losses)
        semantic_logits = self.semantic_head(features)
        losses.update(self._semantic_losses(semantic_logits, gt_semantic, gt_instances))
        losses["loss_panoptic"] = self.panoptic_loss_weight * self._panoptic_loss(
            features, semantic_logits, gt_semantic, gt_instances
        )
        return losses

    def _semantic_losses(self, logits, gt_semantic, gt_instances) -> dict[str, torch.Tensor]:
        stride = self.semantic_head.common_stride
        upsampled = F.interpolate(logits, scale_factor=stride, mode="bilinear", align_corners=False)
        valid = (gt_semantic != self.ignore_value).sum().clamp(min=1)
        pixel_loss = F.cross_entropy(
            upsampled, gt_semantic, ignore_index=self.ignore_value, reduction="sum"
        )
        losses = {"loss_sem_seg": self.semantic_loss_weight * pixel_loss / valid}
        if self.roi_loss_weight > 0:
            losses["loss_sem_seg_roi"] = self.roi_loss_weight * semantic_roi_loss(
                logits, gt_semantic, [x.gt_boxes for x in gt_instances], stride,
                self.roi_resolution, self.ignore_value,
            )  # fmt: skip
        return losses

    def _mask_logits(self, features, boxes: list[Boxes], classes: list[torch.Tensor]):
        """Per image, the mask head's logits (N, M, M) of each box's class."""
        pooled = self.roi_heads.mask_pooler(
            [features[f] for f in self.roi_heads.mask_in_features], boxes
        )
        logits = self.roi_heads.mask_head.layers(pooled)
        all_classes = torch.cat(classes)
        if logits.shape[1] == 1:  # class-agnostic masks
            logits = logits[:, 0]
        else:
            logits = logits[torch.arange(len(all_classes), device=logits.device), all_classes]
        return logits.split([len(b) for b in boxes])

    def _panoptic_loss(self, features, semantic_logits, gt_semantic, gt_instances):
        """
        Panoptic cross-entropy at the semantic head's stride, over the ground-truth boxes, of
        which a random ``box_keep_fraction`` is kept; pixels of the others target "unknown".
        """
        stride = self.semantic_head.common_stride
        # Labels at the centers of the stride x stride cells of the logits.
        gt_semantic = gt_semantic[:, stride // 2 :: stride, stride // 2 :: stride]
        height, width = semantic_logits.shape[-2:]
        kept = []
        for instances in gt_instances:
            count = len(instances)
            if self.with_unknown and count > 0:
                order = torch.randperm(count, device=self.device)
                kept.append(order[: max(int(count * self.box_keep_fraction), 1)])
            else:
                kept.append(torch.arange(count, device=self.device))
        mask_logits = self._mask_logits(
            features,
            [x.gt_boxes[k] for x, k in zip(gt_instances, kept)],
            [x.gt_classes[k] for x, k in zip(gt_instances, kept)],
        )
        total_loss, total_pixels = semantic_logits.sum() * 0.0, 0
        for i, instances in enumerate(gt_instances):
            masks = _strided_masks(instances.gt_masks.tensor, stride, (height, width))
            dropped = torch.ones(len(instances), dtype=torch.bool, device=self.device)
            dropped[kept[i]] = False
            boxes = instances.gt_boxes.tensor[kept[i]] / stride
            z = panoptic_logits(
                semantic_logits[i],
                self.num_stuff_classes,
                boxes,
                instances.gt_classes[kept[i]],
                paste_mask_logits(mask_logits[i], boxes, height, width),
                self.with_unknown,
            )
            target = panoptic_target(
                gt_semantic[i], self.num_stuff_classes, masks[kept[i]], masks[dropped],
                _PANOPTIC_IGNORE,
            )  # fmt: skip
            total_loss = total_loss + F.cross_entropy(
                z[None], target[None], ignore_index=_PANOPTIC_IGNORE, reduction="sum"
            )
            total_pixels += int((target != _PANOPTIC_IGNORE).sum())
        return total_loss / max(total_pixels, 1)

    def inference(self, batched_inputs, do_postprocess: bool = True):
        if not do_postprocess:
            raise ValueError("UPSNet's panoptic output only exists after post-processing")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        # Boxes only: the mask head runs once, below, for the detections' masks (probabilities,
        # as detectron2's mask_rcnn_inference gives) and the panoptic candidates' logits.
        detections = self.roi_heads._forward_box(features, proposals)
        semantic_logits = self.semantic_head(features)
        detection_mask_logits = self._mask_logits(
            features, [x.pred_boxes for x in detections], [x.pred_classes for x in detections]
        )
        candidates, mask_logits = [], []
        for instances, logits in zip(detections, detection_mask_logits):
            instances.pred_masks = logits.sigmoid()[:, None]
            keep = self._panoptic_candidates(instances)
            candidates.append(instances[keep])
            mask_logits.append(logits[keep])
        # Resizing to the image is post-processing, after the last layer (the mask head).
        semantic_logits = F.interpolate(
            semantic_logits,
            scale_factor=self.semantic_head.common_stride,
            mode="bilinear",
            align_corners=False,
        )
        results = []
        for i, image_size in enumerate(images.image_sizes):
            height = batched_inputs[i].get("height", image_size[0])
            width = batched_inputs[i].get("width", image_size[1])
            logits = semantic_logits[i, :, : image_size[0], : image_size[1]]
            panoptic = self._panoptic_inference(logits, candidates[i], mask_logits[i])
            results.append(
                {
                    "panoptic_seg": resize_panoptic(*panoptic, height, width),
                    # (S + 1) probabilities: channel 0 any thing, 1..S the stuff classes.
                    "sem_seg": merged_class_probabilities(
                        crop_and_resize(semantic_logits[i], image_size, height, width),
                        merged=slice(self.num_stuff_classes, None),
                    ),
                    "instances": detector_postprocess(detections[i], height, width),
                }
            )
        return results

    def _panoptic_candidates(self, detections: Instances) -> torch.Tensor:
        """Indices of the detections above the score threshold, after class-agnostic NMS."""
        above = torch.nonzero(detections.scores >= self.score_thresh)[:, 0]
        keep = nms(detections.pred_boxes.tensor[above], detections.scores[above], self.nms_thresh)
        return above[keep]

    def _panoptic_inference(self, semantic_logits, candidates: Instances, mask_logits):
        height, width = semantic_logits.shape[-2:]
        boxes = candidates.pred_boxes.tensor
        pasted = paste_mask_logits(mask_logits, boxes, height, width)
        keep = remove_overlapping_instances(
            pasted > 0, candidates.scores, candidates.pred_classes, self.overlap_thresh
        )
        boxes, pasted, candidates = boxes[keep], pasted[keep], candidates[keep]
        classes = candidates.pred_classes
        # The winning channel of Z, in row chunks of ~Z_CHUNK_FLOATS: Z (S + N + 1 channels at
        # full resolution) is never whole.
        winner = torch.empty((height, width), dtype=torch.long, device=boxes.device)
        channels = self.num_stuff_classes + len(candidates) + 1
        for rows in row_chunks(height, channels * width, Z_CHUNK_FLOATS):
            z = panoptic_logits(
                semantic_logits[:, rows], self.num_stuff_classes, boxes, classes,
                pasted[:, rows], self.with_unknown, first_row=rows.start,
            )  # fmt: skip
            winner[rows] = class_argmax(z)
        num_stuff, num_instances = self.num_stuff_classes, len(candidates)
        # Separated stuff ids 1..S; unknown (channel S + N) and instances are 0 (no stuff).
        stuff_classes = torch.where(winner < num_stuff, winner + 1, torch.zeros_like(winner))
        is_instance = (winner >= num_stuff) & (winner < num_stuff + num_instances)
        instance_index = torch.where(is_instance, winner - num_stuff, torch.full_like(winner, -1))
        reassign_by_semantic_majority(
            semantic_logits, num_instances, num_stuff, stuff_classes, instance_index
        )
        return panoptic_segments(
            stuff_classes, instance_index, classes, candidates.scores, self.stuff_area_limit
        )


def reassign_by_semantic_majority(
    semantic_logits: torch.Tensor,
    num_instances: int,
    num_stuff_classes: int,
    stuff_classes: torch.Tensor,
    instance_index: torch.Tensor,
) -> None:
    """
    UPSNet's official post-processing rule: an instance whose pixels the semantic head labels
    (argmax of ``semantic_logits``, C x H x W, stuff ``0..S-1`` then things) at least half as one
    stuff class becomes that stuff (separated id, ``+ 1``); an instance whose majority is a
    thing class stays. Ties go to the lowest class. Updates ``stuff_classes`` and
    ``instance_index`` in place, for all instances at once; the argmax is taken on instance
    pixels only.
    """
    if num_instances == 0:
        return
    inside = instance_index >= 0
    num_classes = len(semantic_logits)
    semantic = semantic_logits[:, inside].argmax(dim=0)
    counts = torch.bincount(
        instance_index[inside] * num_classes + semantic,
        minlength=num_instances * num_classes,
    ).view(num_instances, num_classes)
    largest, majority = counts.max(dim=1)
    becomes_stuff = (majority < num_stuff_classes) & (2 * largest >= counts.sum(dim=1))
    moved = inside & becomes_stuff[instance_index.clamp(min=0)]
    stuff_classes[moved] = majority[instance_index[moved]] + 1
    instance_index[moved] = -1


def _strided_masks(masks: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Bit masks (N, h, w) at image size, zero-padded and sampled at the stride's cell centers."""
    padded = masks.new_zeros((len(masks), size[0] * stride, size[1] * stride))
    padded[:, : masks.shape[1], : masks.shape[2]] = masks
    return padded[:, stride // 2 :: stride, stride // 2 :: stride]

