"""
``PanopticFCN``: Panoptic FCN (Li et al., "Fully Convolutional Networks for Panoptic
Segmentation", CVPR 2021) as a configurable detectron2 meta-architecture.

Inputs come from ``COCOPanopticDatasetMapper`` (panoptic PNG datasets) or detectron2's
``DatasetMapper`` with ``INPUT.MASK_FORMAT: bitmask`` (COCO separated): ``instances``
(``gt_masks``, ``gt_classes``) and ``sem_seg`` (stuff 1..S, things 0, void = ignore value).
Targets are built on the model's device by :class:`PanopticFCNTargetGenerator`, because the
level sizes depend on the padded batch.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList
from torch import nn

from ..images import indices_by_padded_size, normalized_image_batch
from .heads import FeatureEncoder, KernelGenerator
from .postprocess import PanopticFCNPostprocessor
from .losses import PanopticFCNLoss
from .targets import PanopticFCNTargetGenerator, PanopticFCNTargets

__all__ = ["PanopticFCN"]


@META_ARCH_REGISTRY.register()
class PanopticFCN(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        kernel_generator: KernelGenerator,
        kernel_features: list[str],
        feature_encoder: FeatureEncoder,
        target_generator: PanopticFCNTargetGenerator,
        postprocessor: PanopticFCNPostprocessor,
        criterion: PanopticFCNLoss,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
    ):
        super().__init__()
        self.backbone = backbone
        self.kernel_generator = kernel_generator
        self.kernel_features = kernel_features
        self.feature_encoder = feature_encoder
        self.target_generator = target_generator
        self.postprocessor = postprocessor
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.criterion = criterion

    @classmethod
    def from_config(cls, cfg):
        fcn = cfg.MODEL.PANOPTIC_FCN
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        kernel_features = list(fcn.KERNEL_GENERATOR.IN_FEATURES)
        encoder_features = list(fcn.FEATURE_ENCODER.IN_FEATURES)
        missing = [f for f in kernel_features + encoder_features if f not in shapes]
        if missing:
            raise ValueError(
                f"the backbone ({cfg.MODEL.BACKBONE.NAME}) gives {sorted(shapes)} but Panoptic FCN "
                f"needs {missing}; use build_panoptic_fcn_resnet_fpn_backbone (P2-P7)"
            )
        if fcn.NUM_THING_CLASSES < 1 or fcn.NUM_STUFF_CLASSES < 0:
            raise ValueError(
                "MODEL.PANOPTIC_FCN.NUM_THING_CLASSES must be >= 1 and NUM_STUFF_CLASSES >= 0, "
                f"got {fcn.NUM_THING_CLASSES} and {fcn.NUM_STUFF_CLASSES}"
            )
        channels = {shapes[f].channels for f in kernel_features}
        if len(channels) != 1:
            raise ValueError(f"kernel-generator levels {kernel_features} differ in channels")
        pool_sizes = list(fcn.INFERENCE.HEATMAP_POOL_SIZES)
        if len(pool_sizes) != len(kernel_features):
            raise ValueError(
                f"MODEL.PANOPTIC_FCN.INFERENCE.HEATMAP_POOL_SIZES has {len(pool_sizes)} entries "
                f"but KERNEL_GENERATOR.IN_FEATURES {len(kernel_features)} levels; give one odd "
                "pool size per level"
            )
        if any(size < 1 or size % 2 == 0 for size in pool_sizes):
            raise ValueError(
                f"MODEL.PANOPTIC_FCN.INFERENCE.HEATMAP_POOL_SIZES must be odd, got {pool_sizes}"
            )
        kernel_dim = fcn.FEATURE_ENCODER.CONVS_DIM
        encoder_shapes = {f: shapes[f] for f in encoder_features}
        encoder_stride = min(s.stride for s in encoder_shapes.values())
        return {
            "backbone": backbone,
            "kernel_generator": KernelGenerator(
                in_channels=channels.pop(),
                num_thing_classes=fcn.NUM_THING_CLASSES,
                num_stuff_classes=fcn.NUM_STUFF_CLASSES,
                kernel_dim=kernel_dim,
                position_convs=fcn.POSITION_HEAD.NUM_CONVS,
                position_dim=fcn.POSITION_HEAD.CONVS_DIM,
                position_norm=fcn.POSITION_HEAD.NORM,
                position_deform=fcn.POSITION_HEAD.DEFORM,
                prior_prob=fcn.POSITION_HEAD.PRIOR_PROB,
                kernel_convs=fcn.KERNEL_HEAD.NUM_CONVS,
                kernel_convs_dim=fcn.KERNEL_HEAD.CONVS_DIM,
                kernel_norm=fcn.KERNEL_HEAD.NORM,
            ),
            "kernel_features": kernel_features,
            "feature_encoder": FeatureEncoder(
                encoder_shapes,
                fpn_dim=fcn.FEATURE_ENCODER.FPN_DIM,
                fpn_norm=fcn.FEATURE_ENCODER.FPN_NORM,
                norm=fcn.FEATURE_ENCODER.NORM,
                num_convs=fcn.FEATURE_ENCODER.NUM_CONVS,
                channels=kernel_dim,
                deform=fcn.FEATURE_ENCODER.DEFORM,
            ),
            "target_generator": PanopticFCNTargetGenerator(
                num_thing_classes=fcn.NUM_THING_CLASSES,
                num_stuff_classes=fcn.NUM_STUFF_CLASSES,
                level_strides=[shapes[f].stride for f in kernel_features],
                instance_scales=[tuple(r) for r in fcn.KERNEL_GENERATOR.INSTANCE_SCALES],
                encoder_stride=encoder_stride,
                min_overlap=fcn.TARGETS.GAUSSIAN_MIN_OVERLAP,
                ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            ),
            "postprocessor": PanopticFCNPostprocessor(
                thing_score_thresh=fcn.INFERENCE.THING_SCORE_THRESH,
                stuff_score_thresh=fcn.INFERENCE.STUFF_SCORE_THRESH,
                thing_top_k=fcn.INFERENCE.THING_TOP_K,
                heatmap_pool_sizes=pool_sizes,
                kernel_fusion_thresh=fcn.INFERENCE.KERNEL_FUSION_THRESH,
                mask_thresh=fcn.INFERENCE.MASK_THRESH,
                min_score=fcn.INFERENCE.MIN_SCORE,
                instance_score_thresh=fcn.INFERENCE.INSTANCE_SCORE_THRESH,
                overlap_thresh=fcn.INFERENCE.OVERLAP_THRESH,
                stuff_area_limit=fcn.INFERENCE.STUFF_AREA_LIMIT,
                max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
                encoder_stride=encoder_stride,
            ),
            "criterion": PanopticFCNLoss(
                focal_alpha=fcn.LOSS.FOCAL_ALPHA,
                focal_gamma=fcn.LOSS.FOCAL_GAMMA,
                position_weight=fcn.LOSS.POSITION_WEIGHT,
                segment_weight=fcn.LOSS.SEGMENT_WEIGHT,
                top_k_points=fcn.LOSS.TOP_K_POINTS,
            ),
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
        thing_logits, stuff_logits, thing_kernels, kernel_features, encoded = self._network(
            images.tensor
        )
        targets = [
            self._targets(x, tuple(images.tensor.shape[-2:]), thing_logits, encoded)
            for x in batched_inputs
        ]
        return self.criterion(
            thing_logits, stuff_logits, thing_kernels, kernel_features,
            self.kernel_generator.embed_stuff, encoded, targets,
        )  # fmt: skip

    def _images(self, batched_inputs) -> ImageList:
        return normalized_image_batch(
            batched_inputs, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility
        )

    def _network(self, images: torch.Tensor):
        features = self.backbone(images)
        thing_logits, stuff_logits, thing_kernels, kernel_features = self.kernel_generator(
            [features[f] for f in self.kernel_features]
        )
        encoded = self.feature_encoder(features)
        return thing_logits, stuff_logits, thing_kernels, kernel_features, encoded

    def _targets(self, record, padded_size, thing_logits, encoded) -> PanopticFCNTargets:
        if "instances" not in record or "sem_seg" not in record:
            raise ValueError(
                "Panoptic FCN trains on 'instances' and 'sem_seg'; use COCOPanopticDatasetMapper "
                "or DatasetMapper with sem_seg_file_name"
            )
        instances = record["instances"].to(self.device)
        if instances.has("gt_masks"):
            if not isinstance(instances.gt_masks, BitMasks):
                raise ValueError(
                    f"Panoptic FCN needs bit masks, got {type(instances.gt_masks).__name__}; set "
                    "INPUT.MASK_FORMAT to 'bitmask'"
                )
            masks = instances.gt_masks
        else:  # detectron2's DatasetMapper leaves it out for images without things
            masks = BitMasks(torch.zeros((0, *instances.image_size), dtype=torch.bool))
        # Level assignment and Gaussians use the annotated boxes, as the official code.
        boxes = instances.gt_boxes if instances.has("gt_boxes") else masks.get_bounding_boxes()
        return self.target_generator(
            masks.tensor.to(self.device), boxes.tensor.to(self.device), instances.gt_classes,
            record["sem_seg"].to(self.device), padded_size,
            [tuple(x.shape[-2:]) for x in thing_logits], tuple(encoded.shape[-2:]),
        )  # fmt: skip

    @torch.no_grad()
    def inference(self, batched_inputs):
        """
        Each image gets the result it has alone, as the official (per-image) inference: the
        heads' GroupNorm statistics and the convolutions at the padding border see all of a
        batch's padding, so the images are run in groups of equal padded size (one group when
        the sizes agree, as in a batch of one).
        """
        images = self._images(batched_inputs)
        groups = indices_by_padded_size(images.image_sizes, self.backbone.size_divisibility)
        results = [None] * len(batched_inputs)
        for (h, w), members in groups.items():
            thing_logits, stuff_logits, thing_kernels, kernel_features, encoded = self._network(
                images.tensor[members, :, :h, :w]
            )
            for b, index in enumerate(members):
                record, image_size = batched_inputs[index], images.image_sizes[index]
                results[index] = self.postprocessor(
                    [x[b] for x in thing_logits],
                    [x[b] for x in stuff_logits],
                    [x[b] for x in thing_kernels],
                    [x[b] for x in kernel_features],
                    self.kernel_generator.embed_stuff,
                    encoded[b],
                    tuple(image_size),
                    (record.get("height", image_size[0]), record.get("width", image_size[1])),
                )
        return results
