"""
``PanopticFCN``: Panoptic FCN (Li et al., "Fully Convolutional Networks for Panoptic
Segmentation", CVPR 2021) as a configurable detectron2 meta-architecture.

Inputs come from ``PanopticFPNDatasetMapper`` (panoptic PNG datasets) or detectron2's
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

from ..images import normalized_image_batch
from .heads import FeatureEncoder, KernelGenerator
from .inference import PanopticFCNInference
from .losses import sigmoid_focal_loss, weighted_dice_loss
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
        inference: PanopticFCNInference,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        ignore_value: int,
        focal_alpha: float,
        focal_gamma: float,
        position_weight: float,
        segment_weight: float,
        top_k_points: int,
    ):
        super().__init__()
        self.backbone = backbone
        self.kernel_generator = kernel_generator
        self.kernel_features = kernel_features
        self.feature_encoder = feature_encoder
        self.target_generator = target_generator
        self.inference = inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.ignore_value = ignore_value
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.position_weight = position_weight
        self.segment_weight = segment_weight
        self.top_k_points = top_k_points

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
            "inference": PanopticFCNInference(
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
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "focal_alpha": fcn.LOSS.FOCAL_ALPHA,
            "focal_gamma": fcn.LOSS.FOCAL_GAMMA,
            "position_weight": fcn.LOSS.POSITION_WEIGHT,
            "segment_weight": fcn.LOSS.SEGMENT_WEIGHT,
            "top_k_points": fcn.LOSS.TOP_K_POINTS,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self._inference(batched_inputs)
        images = self._images(batched_inputs)
        thing_logits, stuff_logits, thing_kernels, kernel_features, encoded = self._network(
            images.tensor
        )
        stuff_kernels = self.kernel_generator.stuff_embed(kernel_features[0])
        targets = [
            self._targets(x, images.tensor.shape[-2:], thing_logits, encoded)
            for x in batched_inputs
        ]
        return self._losses(
            thing_logits, stuff_logits, thing_kernels, stuff_kernels, encoded, targets
        )

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
                "Panoptic FCN trains on 'instances' and 'sem_seg'; use PanopticFPNDatasetMapper "
                "or DatasetMapper with sem_seg_file_name"
            )
        instances = record["instances"].to(self.device)
        h, w = padded_size
        if instances.has("gt_masks"):
            if not isinstance(instances.gt_masks, BitMasks):
                raise ValueError(
                    f"Panoptic FCN needs bit masks, got {type(instances.gt_masks).__name__}; set "
                    "INPUT.MASK_FORMAT to 'bitmask'"
                )
            masks = instances.gt_masks.tensor
        else:  # detectron2's DatasetMapper leaves it out for images without things
            masks = torch.zeros((0, *instances.image_size), dtype=torch.bool, device=self.device)
        masks = nn.functional.pad(masks, (0, w - masks.shape[2], 0, h - masks.shape[1]))
        sem_seg = record["sem_seg"].to(self.device)
        sem_seg = nn.functional.pad(
            sem_seg, (0, w - sem_seg.shape[1], 0, h - sem_seg.shape[0]), value=self.ignore_value
        )
        return self.target_generator(
            masks, instances.gt_classes, sem_seg,
            [tuple(x.shape[-2:]) for x in thing_logits], tuple(encoded.shape[-2:]),
        )  # fmt: skip

    def _losses(self, thing_logits, stuff_logits, thing_kernels, stuff_kernels, encoded, targets):
        focal = dict(alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none")
        num_things = sum(len(a.instance) for t in targets for a in t.assignments)
        thing_loss = sum(
            sigmoid_focal_loss(logits[b], t.thing_heatmaps[level], **focal).sum()
            for level, logits in enumerate(thing_logits)
            for b, t in enumerate(targets)
        ) / max(1, num_things)
        # Stuff: summed over classes, averaged over the positions of each level (W_i H_i).
        stuff_loss = sum(
            (sigmoid_focal_loss(logits[b], t.stuff_maps[level], **focal) * t.stuff_valid[level])
            .sum() / (len(targets) * logits.shape[-2] * logits.shape[-1])
            for level, logits in enumerate(stuff_logits)
            for b, t in enumerate(targets)
        )  # fmt: skip

        segment_loss, num_objects = encoded.new_zeros(()), 0
        for b, t in enumerate(targets):
            features = encoded[b]
            for level, assignment in enumerate(t.assignments):
                if len(assignment.instance) == 0:
                    continue
                level_kernels, weights = self._thing_kernels(
                    thing_logits[level][b], thing_kernels[level][b], assignment
                )
                probs = torch.einsum("nkc,chw->nkhw", level_kernels, features).sigmoid()
                segment_loss = segment_loss + weighted_dice_loss(
                    probs, t.thing_masks[assignment.instance], weights
                )
                num_objects += len(assignment.instance)
            if len(t.stuff_classes):
                kernels = self._stuff_kernels(stuff_logits[0][b], stuff_kernels[b], t)
                probs = torch.einsum("mc,chw->mhw", kernels, features).sigmoid()
                segment_loss = segment_loss + weighted_dice_loss(
                    probs[:, None], t.stuff_masks, probs.new_ones((len(probs), 1))
                )
                num_objects += len(t.stuff_classes)
        return {
            "loss_pos_things": self.position_weight * thing_loss,
            "loss_pos_stuff": self.position_weight * stuff_loss,
            "loss_seg": self.segment_weight * segment_loss / max(1, num_objects),
        }

    def _thing_kernels(self, logits, kernels, assignment):
        """
        Kernels (n, k, C) at the k highest-scored positions of each thing's Gaussian window on
        its class channel, with weights (n, k) = their scores normalized to sum to 1 (0 for the
        slots a window smaller than k cannot fill).
        """
        _, h, w = logits.shape
        ys = torch.arange(h, device=logits.device)[None, :, None]
        xs = torch.arange(w, device=logits.device)[None, None, :]
        cy, cx = assignment.center_yx[:, 0, None, None], assignment.center_yx[:, 1, None, None]
        r = assignment.radius[:, None, None]
        window = ((ys - cy).abs() <= r) & ((xs - cx).abs() <= r)
        scores = logits.detach().sigmoid()[assignment.classes]
        scores = torch.where(window, scores, torch.full_like(scores, -1.0)).flatten(1)
        values, positions = scores.topk(min(self.top_k_points, h * w), dim=1)
        weights = values.clamp(min=0)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-6)
        return kernels.flatten(1).T[positions], weights

    @staticmethod
    def _stuff_kernels(logits, kernels, targets: PanopticFCNTargets):
        """One kernel per present stuff class: the mean of the finest level's kernels over the
        class region, weighted by the region's target fraction times the predicted score."""
        region = targets.stuff_maps[0][targets.stuff_classes].flatten(1)
        weights = region * logits.detach().sigmoid()[targets.stuff_classes].flatten(1)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-6)
        return weights @ kernels.flatten(1).T

    @torch.no_grad()
    def _inference(self, batched_inputs):
        """
        Each image gets the result it has alone, as the official (per-image) inference: the
        heads' GroupNorm statistics and the convolutions at the padding border see all of a
        batch's padding, so the images are run in groups of equal padded size (one group when
        the sizes agree, as in a batch of one).
        """
        images = self._images(batched_inputs)
        divisibility = max(1, self.backbone.size_divisibility)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (h, w) in enumerate(images.image_sizes):
            padded = (-(-h // divisibility) * divisibility, -(-w // divisibility) * divisibility)
            groups.setdefault(padded, []).append(index)
        results = [None] * len(batched_inputs)
        for (h, w), members in groups.items():
            thing_logits, stuff_logits, thing_kernels, kernel_features, encoded = self._network(
                images.tensor[members, :, :h, :w]
            )
            for b, index in enumerate(members):
                record, image_size = batched_inputs[index], images.image_sizes[index]
                results[index] = self.inference(
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
