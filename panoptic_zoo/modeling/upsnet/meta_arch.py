"""UPSNet (Xiong et al., CVPR 2019) as a detectron2 meta-architecture."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances

from ...postprocess import crop_and_resize, merged_class_probabilities, panoptic_output
from .fpn_global_pooling import add_fpn_global_pooling
from .panoptic_head import (
    mean_cross_entropy,
    panoptic_candidates,
    panoptic_logits,
    panoptic_target,
    paste_mask_logits,
    pixel_boxes,
)
from .postprocess import panoptic_postprocess
from .semantic_head import UPSNetSemanticHead, semantic_roi_loss

__all__ = ["UPSNet", "subsample_labels"]

# Ignored pixels of the panoptic target: every non-negative value can be a channel of Z.
_PANOPTIC_IGNORE = -1


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
        max_candidates: int = 100,
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
        self.max_candidates = max_candidates
        self.ignore_value = ignore_value

    @classmethod
    def from_config(cls, cfg):
        if not cfg.MODEL.MASK_ON:
            raise ValueError("UPSNet needs MODEL.MASK_ON: True (its panoptic head uses masks)")
        ret = super().from_config(cfg)
        upsnet = cfg.MODEL.UPSNET
        if upsnet.FPN_GLOBAL_POOLING:
            add_fpn_global_pooling(ret["backbone"])
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
                "max_candidates": cfg.TEST.DETECTIONS_PER_IMAGE,
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
            features, semantic_logits, gt_semantic, gt_instances, images.image_sizes
        )
        return losses

    def _semantic_losses(self, logits, gt_semantic, gt_instances) -> dict[str, torch.Tensor]:
        stride = self.semantic_head.common_stride
        upsampled = F.interpolate(logits, scale_factor=stride, mode="bilinear", align_corners=False)
        # Mean over the labelled pixels (the official nn.CrossEntropyLoss, one image per GPU).
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

    def _panoptic_loss(self, features, semantic_logits, gt_semantic, gt_instances, image_sizes):
        """
        Panoptic cross-entropy at the semantic head's stride over the ground-truth boxes, of
        which a random ``box_keep_fraction`` is kept (at least one); the other thing pixels
        target "unknown". As officially, the mean over every pixel of the (padded) map, void
        and padding included (they add 0).
        """
        stride = self.semantic_head.common_stride
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
        total_loss = semantic_logits.sum() * 0.0
        for i, instances in enumerate(gt_instances):
            labels = subsample_labels(gt_semantic[i], image_sizes[i], stride, self.ignore_value)
            masks = instances.gt_masks.tensor[kept[i]]
            padded = masks.new_zeros((len(masks), height * stride, width * stride))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            masks = subsample_labels(padded, image_sizes[i], stride, False)
            mask_boxes, semantic_boxes = pixel_boxes(instances.gt_boxes.tensor[kept[i]], 1 / stride)
            z = panoptic_logits(
                semantic_logits[i],
                self.num_stuff_classes,
                semantic_boxes,
                instances.gt_classes[kept[i]],
                paste_mask_logits(mask_logits[i], mask_boxes, height, width),
                self.with_unknown,
            )
            target = panoptic_target(
                labels, self.num_stuff_classes, masks, self.with_unknown, _PANOPTIC_IGNORE,
                self.ignore_value,
            )  # fmt: skip
            total_loss = total_loss + mean_cross_entropy(z[None], target[None], _PANOPTIC_IGNORE)
        # Every image has the batch's padded size: the mean over all pixels of the batch.
        return total_loss / len(gt_instances)

    def inference(self, batched_inputs, do_postprocess: bool = True):
        if not do_postprocess:
            raise ValueError("UPSNet's panoptic output only exists after post-processing")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        roi_heads = self.roi_heads
        box_features = roi_heads.box_pooler(
            [features[f] for f in roi_heads.box_in_features], [x.proposal_boxes for x in proposals]
        )
        predictions = roi_heads.box_predictor(roi_heads.box_head(box_features))
        # Detections (detectron2's class-wise NMS) are returned for AP; the panoptic candidates
        # are selected from the same box predictions, as officially.
        detections, _ = roi_heads.box_predictor.inference(predictions, proposals)
        class_boxes = roi_heads.box_predictor.predict_boxes(predictions, proposals)
        class_scores = roi_heads.box_predictor.predict_probs(predictions, proposals)
        candidates = []
        for boxes, scores, image_size in zip(class_boxes, class_scores, images.image_sizes):
            boxes, scores, classes = panoptic_candidates(
                boxes, scores, image_size, self.score_thresh, self.nms_thresh,
                self.max_candidates,
            )  # fmt: skip
            candidates.append(
                Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes)
            )
        semantic_logits = self.semantic_head(features)
        # One mask-head pass for the detections' masks (probabilities, as detectron2's
        # mask_rcnn_inference gives) and the candidates' logits.
        mask_logits = self._mask_logits(
            features,
            [Boxes.cat([d.pred_boxes, c.pred_boxes]) for d, c in zip(detections, candidates)],
            [torch.cat([d.pred_classes, c.pred_classes]) for d, c in zip(detections, candidates)],
        )
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
            detection_logits, candidate_logits = mask_logits[i].split(
                [len(detections[i]), len(candidates[i])]
            )
            detections[i].pred_masks = detection_logits.sigmoid()[:, None]
            logits = semantic_logits[i, :, : image_size[0], : image_size[1]]
            panoptic = panoptic_postprocess(
                logits, self.num_stuff_classes, candidates[i], candidate_logits,
                self.overlap_thresh, self.with_unknown, self.stuff_area_limit, (height, width),
            )  # fmt: skip
            # (S + 1) probabilities: channel 0 any thing, 1..S the stuff classes.
            semantic = merged_class_probabilities(
                crop_and_resize(semantic_logits[i], image_size, height, width),
                merged=slice(self.num_stuff_classes, None),
            )
            instances = detector_postprocess(detections[i], height, width)
            results.append(panoptic_output(panoptic, semantic, instances))
        return results


def subsample_labels(labels: torch.Tensor, image_size, stride: int, fill) -> torch.Tensor:
    """
    Every ``stride``-th pixel from the top-left one of a (..., H, W) map padded to the batch:
    the official targets (OpenCV's nearest resizing of the image's (h, w) map by 1 / stride,
    then padded with ``fill``), so rows and columns from round(h / stride) and
    round(w / stride) (half to even) on are ``fill``.
    """
    sampled = labels[..., ::stride, ::stride].clone()
    rows, cols = (round(n / stride) for n in image_size)
    sampled[..., rows:, :] = fill
    sampled[..., :, cols:] = fill
    return sampled
