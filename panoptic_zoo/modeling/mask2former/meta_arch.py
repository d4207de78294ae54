"""
``Mask2Former``: Mask2Former (Cheng et al., "Masked-attention Mask Transformer for Universal
Image Segmentation", CVPR 2022) as a configurable detectron2 meta-architecture.

Inputs come from ``COCOPanopticDatasetMapper`` (panoptic PNG datasets): ``instances``
(``gt_masks``, ``gt_classes``) for things and ``sem_seg`` (stuff 1..S, things 0, void = ignore
value) for stuff; each stuff class present becomes one target segment, as the official mapper's
one segment per stuff category.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList
from torch import nn

from ..images import indices_by_padded_size, normalized_image_batch
from .losses import Mask2FormerLoss
from .matcher import HungarianMatcher
from .pixel_decoder import MSDeformAttnPixelDecoder
from .postprocess import Mask2FormerPostprocessor
from .transformer_decoder import MaskedAttentionDecoder

__all__ = ["Mask2Former", "Mask2FormerHead"]


class Mask2FormerHead(nn.Module):
    """Pixel decoder and transformer decoder: backbone features -> per-prediction class and mask
    logits (see :class:`MaskedAttentionDecoder`)."""

    def __init__(self, pixel_decoder: MSDeformAttnPixelDecoder, predictor: MaskedAttentionDecoder):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, features: dict[str, torch.Tensor], all_predictions: bool = True):
        mask_features, scales = self.pixel_decoder(features)
        return self.predictor(scales, mask_features, all_predictions)


@META_ARCH_REGISTRY.register()
class Mask2Former(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: Mask2FormerHead,
        criterion: Mask2FormerLoss,
        postprocessor: Mask2FormerPostprocessor,
        num_thing_classes: int,
        size_divisibility: int,
        ignore_value: int,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.criterion = criterion
        self.postprocessor = postprocessor
        self.num_thing_classes = num_thing_classes
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        m2f = cfg.MODEL.MASK2FORMER
        if (
            m2f.NUM_THING_CLASSES < 0
            or m2f.NUM_STUFF_CLASSES < 0
            or (m2f.NUM_THING_CLASSES + m2f.NUM_STUFF_CLASSES < 1)
        ):
            raise ValueError(
                "MODEL.MASK2FORMER.NUM_THING_CLASSES and NUM_STUFF_CLASSES must be >= 0 and not "
                f"both 0, got {m2f.NUM_THING_CLASSES} and {m2f.NUM_STUFF_CLASSES}"
            )
        if m2f.DECODER.LAYERS < 1:
            raise ValueError(
                f"MODEL.MASK2FORMER.DECODER.LAYERS must be >= 1, got {m2f.DECODER.LAYERS}"
            )
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        decoder = m2f.PIXEL_DECODER
        missing = [f for f in decoder.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"the backbone ({cfg.MODEL.BACKBONE.NAME}) gives {sorted(shapes)} but "
                f"MODEL.MASK2FORMER.PIXEL_DECODER.IN_FEATURES needs {missing}; set "
                "MODEL.RESNETS.OUT_FEATURES to res2-res5 (build_resnet_backbone)"
            )
        num_classes = m2f.NUM_THING_CLASSES + m2f.NUM_STUFF_CLASSES
        pixel_decoder = MSDeformAttnPixelDecoder(
            {f: shapes[f] for f in decoder.IN_FEATURES},
            encoder_features=list(decoder.ENCODER_IN_FEATURES),
            conv_dim=decoder.CONVS_DIM,
            mask_dim=decoder.MASK_DIM,
            norm=decoder.NORM,
            encoder_layers=decoder.ENCODER_LAYERS,
            encoder_heads=decoder.ENCODER_HEADS,
            encoder_points=decoder.ENCODER_POINTS,
            encoder_ffn_dim=decoder.ENCODER_FFN_DIM,
            encoder_dropout=decoder.ENCODER_DROPOUT,
        )
        predictor = MaskedAttentionDecoder(
            in_channels=decoder.CONVS_DIM,
            num_classes=num_classes,
            hidden_dim=m2f.DECODER.HIDDEN_DIM,
            num_queries=m2f.DECODER.NUM_QUERIES,
            heads=m2f.DECODER.HEADS,
            ffn_dim=m2f.DECODER.FFN_DIM,
            layers=m2f.DECODER.LAYERS,
            pre_norm=m2f.DECODER.PRE_NORM,
            mask_dim=decoder.MASK_DIM,
            enforce_input_projection=m2f.DECODER.ENFORCE_INPUT_PROJECTION,
        )
        loss = m2f.LOSS
        matcher = HungarianMatcher(
            class_weight=loss.CLASS_WEIGHT, mask_weight=loss.MASK_WEIGHT,
            dice_weight=loss.DICE_WEIGHT, num_points=loss.TRAIN_NUM_POINTS,
        )  # fmt: skip
        return {
            "backbone": backbone,
            "head": Mask2FormerHead(pixel_decoder, predictor),
            "criterion": Mask2FormerLoss(
                num_classes=num_classes,
                matcher=matcher,
                class_weight=loss.CLASS_WEIGHT,
                mask_weight=loss.MASK_WEIGHT,
                dice_weight=loss.DICE_WEIGHT,
                no_object_weight=loss.NO_OBJECT_WEIGHT,
                deep_supervision=loss.DEEP_SUPERVISION,
                num_points=loss.TRAIN_NUM_POINTS,
                oversample_ratio=loss.OVERSAMPLE_RATIO,
                importance_sample_ratio=loss.IMPORTANCE_SAMPLE_RATIO,
            ),
            "postprocessor": Mask2FormerPostprocessor(
                num_thing_classes=m2f.NUM_THING_CLASSES,
                object_mask_threshold=m2f.INFERENCE.OBJECT_MASK_THRESHOLD,
                overlap_threshold=m2f.INFERENCE.OVERLAP_THRESHOLD,
                max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
            ),
            "num_thing_classes": m2f.NUM_THING_CLASSES,
            "size_divisibility": m2f.SIZE_DIVISIBILITY,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self._images(batched_inputs)
        class_logits, mask_logits = self.head(self.backbone(images.tensor))
        padded_size = tuple(images.tensor.shape[-2:])
        targets = [self.targets(record, padded_size) for record in batched_inputs]
        return self.criterion(class_logits, mask_logits, targets)

    def _size_divisibility(self) -> int:
        """MODEL.MASK2FORMER.SIZE_DIVISIBILITY, or the backbone's when that is 0."""
        return self.size_divisibility or self.backbone.size_divisibility

    def _images(self, batched_inputs) -> ImageList:
        return normalized_image_batch(
            batched_inputs, self.pixel_mean, self.pixel_std, self._size_divisibility()
        )

    def targets(self, record: dict, padded_size: tuple[int, int]) -> dict:
        """
        One image's segments as the queries' targets, on the padded input: ``labels`` (M,)
        in the unified classes (things, then stuff S as T + s - 1) and ``masks`` (M, H, W)
        bool; the things first, then the stuff classes present, in class order.
        """
        if "instances" not in record or "sem_seg" not in record:
            raise ValueError(
                "Mask2Former trains on 'instances' and 'sem_seg'; set INPUT.DATASET_MAPPER_NAME "
                "to COCOPanopticDatasetMapper"
            )
        instances = record["instances"]
        sem_seg = record["sem_seg"].to(self.device)
        height, width = sem_seg.shape
        if instances.has("gt_masks"):
            thing_masks = instances.gt_masks.tensor.to(self.device, torch.bool)
        else:  # detectron2's mappers leave it out for images without things
            thing_masks = torch.zeros((0, height, width), dtype=torch.bool, device=self.device)
        stuff = torch.unique(sem_seg)
        stuff = stuff[(stuff > 0) & (stuff != self.ignore_value)]
        masks = torch.cat([thing_masks, sem_seg[None] == stuff[:, None, None]])
        labels = torch.cat([instances.gt_classes.to(self.device),
                            stuff + self.num_thing_classes - 1])  # fmt: skip
        padded = torch.zeros((len(masks), *padded_size), dtype=torch.bool, device=self.device)
        padded[:, :height, :width] = masks
        return {"labels": labels.long(), "masks": padded}

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict]) -> list[dict]:
        """
        Each image gets the result it has alone (the official evaluation runs one image per
        batch): the GroupNorms, the attention and the borders see the padding, so the images
        are run in groups of equal padded size.
        """
        images = self._images(batched_inputs)
        groups = indices_by_padded_size(images.image_sizes, self._size_divisibility())
        results = [None] * len(batched_inputs)
        for (h, w), members in groups.items():
            class_logits, mask_logits = self.head(
                self.backbone(images.tensor[members, :, :h, :w]), all_predictions=False
            )
            for b, index in enumerate(members):
                record, image_size = batched_inputs[index], images.image_sizes[index]
                results[index] = self.postprocessor(
                    class_logits[-1][b], mask_logits[-1][b], (h, w), tuple(image_size),
                    (record.get("height", image_size[0]), record.get("width", image_size[1])),
                )  # fmt: skip
        return results
