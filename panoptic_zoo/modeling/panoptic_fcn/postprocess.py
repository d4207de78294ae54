"""
Panoptic FCN post-processing of one image, as the official implementation's (per image, on the
maps of the image padded alone to the backbone's size divisibility), in tensor code except the
final panoptic merge (a loop over the kept segments, as in detectron2's Panoptic FPN combine step):

1. thing heatmaps smoothed (averaged with their k x k mean, k per level: 3, 3, 3, 5, 5), peaks
   kept by 3x3 max-pool NMS; the top-k peaks of each level scored above the threshold become
   candidates with their kernels, ordered by score over all levels;
2. class-aware kernel fusion: each candidate joins the first (highest-scored) candidate of its
   class whose kernel has cosine similarity >= the threshold with it; a candidate that joined
   an earlier one leads no group; each group leader's kernel becomes its group's mean;
3. stuff kernels: on every level, each class's region is where it is the most probable stuff
   class; a class scored (mean probability over its region) above the threshold gets the
   kernel features summed over its region divided by the level's size, projected; a class's
   kernel is the mean of its levels' kernels;
4. masks = sigmoid(kernel . encoded features); things are rescored by their mean probability
   inside the mask (prob > mask threshold), those below a minimum score dropped;
5. merge: things by score (>= instance threshold, dropped when more than the overlap threshold
   of the mask is already taken), then stuff (argmax of the stuff masks, area limit).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ...postprocess import (
    class_argmax,
    crop_and_resize,
    masks_above,
    panoptic_output,
    panoptic_segments,
    paste_instances_by_score,
)

__all__ = [
    "PanopticFCNPostprocessor",
    "fuse_kernels",
    "pool_stuff_kernels",
    "select_thing_candidates",
]


def select_thing_candidates(
    thing_probs: list[torch.Tensor],
    kernels: list[torch.Tensor],
    pool_sizes: list[int],
    score_thresh: float,
    top_k: int,
):
    """
    Candidates from per-level heatmaps (T, h_l, w_l) and kernels (C, h_l, w_l): scores (n,),
    classes (n,), kernels (n, C), by decreasing score over all levels.
    """
    scores, classes, picked = [], [], []
    for probs, level_kernels, pool_size in zip(thing_probs, kernels, pool_sizes):
        # Half the score, half its local mean: a lone spike counts less than a coherent peak.
        mean = F.avg_pool2d(probs[None], pool_size, stride=1, padding=(pool_size - 1) // 2)[0]
        smoothed = (probs + mean) / 2
        peaks = smoothed == F.max_pool2d(smoothed[None], 3, stride=1, padding=1)[0]
        flat = torch.where(peaks, smoothed, torch.zeros_like(smoothed)).flatten()
        level_size = probs.shape[1] * probs.shape[2]
        values, index = flat.topk(min(top_k, level_size))
        keep = values > score_thresh
        values, index = values[keep], index[keep]
        scores.append(values)
        classes.append(index // level_size)
        picked.append(level_kernels.flatten(1)[:, index % level_size].T)
    scores, classes, picked = torch.cat(scores), torch.cat(classes), torch.cat(picked)
    order = scores.argsort(descending=True, stable=True)
    return scores[order], classes[order], picked[order]


def fuse_kernels(
    kernels: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, similarity_thresh: float
):
    """
    Class-aware kernel fusion of candidates ordered by decreasing score. Candidate j joins the
    first candidate i <= j of its class with cosine similarity >= ``similarity_thresh`` (itself
    when there is none); the candidates that joined themselves lead their group, whose mean
    kernel they get. A candidate that joined an earlier one joins nobody else, and the
    candidates that joined it are dropped with it (as officially). Returns (kernels, scores,
    classes) of the leaders.
    """
    unit = kernels / kernels.norm(dim=1, keepdim=True).clamp(min=1e-8)
    similar = (unit @ unit.T >= similarity_thresh) & (classes[:, None] == classes[None, :])
    similar = torch.triu(similar)
    joined = similar & (torch.cumsum(similar.float(), dim=0) < 2)  # the first similar row
    leader = joined.diagonal()
    groups = joined[leader].float()
    fused = groups @ kernels / groups.sum(dim=1, keepdim=True)
    return fused, scores[leader], classes[leader]


def pool_stuff_kernels(
    stuff_probs: list[torch.Tensor], kernel_features: list[torch.Tensor], score_thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per level, the kernel features (K, h_l, w_l) summed over each stuff class's region (where
    its probability (S+1, h_l, w_l) is the highest) and divided by h_l * w_l: pooled (L, S+1, K),
    and whether the class is present there with a mean probability above ``score_thresh``:
    kept (L, S+1).
    """
    pooled, kept = [], []
    for probs, features in zip(stuff_probs, kernel_features):
        num_classes = probs.shape[0]
        region = F.one_hot(probs.argmax(dim=0).flatten(), num_classes).T.to(probs.dtype)
        area = region.sum(dim=1)
        mean_prob = (probs.flatten(1) * region).sum(dim=1) / area.clamp(min=1)
        kept.append((area > 0) & (mean_prob > score_thresh))
        pooled.append(region @ features.flatten(1).T / region.shape[1])
    return torch.stack(pooled), torch.stack(kept)


class PanopticFCNPostprocessor:
    """One image's network outputs -> its ``panoptic_seg``, ``sem_seg`` and ``instances``."""

    def __init__(
        self,
        *,
        thing_score_thresh: float,
        stuff_score_thresh: float,
        thing_top_k: int,
        heatmap_pool_sizes: list[int],
        kernel_fusion_thresh: float,
        mask_thresh: float,
        min_score: float,
        instance_score_thresh: float,
        overlap_thresh: float,
        stuff_area_limit: int,
        max_detections: int,
        encoder_stride: int,
    ):
        self.thing_score_thresh = thing_score_thresh
        self.stuff_score_thresh = stuff_score_thresh
        self.thing_top_k = thing_top_k
        self.heatmap_pool_sizes = list(heatmap_pool_sizes)
        self.kernel_fusion_thresh = kernel_fusion_thresh
        self.mask_thresh = mask_thresh
        self.min_score = min_score
        self.instance_score_thresh = instance_score_thresh
        self.overlap_thresh = overlap_thresh
        self.stuff_area_limit = stuff_area_limit
        self.max_detections = max_detections
        self.encoder_stride = encoder_stride

    def __call__(
        self,
        thing_logits: list[torch.Tensor],
        stuff_logits: list[torch.Tensor],
        thing_kernels: list[torch.Tensor],
        kernel_features: list[torch.Tensor],
        embed_stuff: Callable[[torch.Tensor], torch.Tensor],
        encoded: torch.Tensor,
        image_size: tuple[int, int],
        output_size: tuple[int, int],
        stages: dict | None = None,
    ) -> dict:
        """
        One image's predictions on its padded extent: per-level thing logits (T, h_l, w_l),
        stuff logits (S+1, h_l, w_l), thing kernels (C, h_l, w_l) and kernel features
        (K, h_l, w_l); ``embed_stuff`` projects pooled kernel features (m, K) to stuff kernels
        (m, C); encoded features (C, H_e, W_e). ``image_size`` is the network input size
        (without padding), ``output_size`` the size to predict at. ``stages``, when given, gets
        the intermediate results (candidates, fused kernels, masks, stuff kernels) for the parity
        tools.
        """
        scores, classes, thing_kernels = select_thing_candidates(
            [x.sigmoid() for x in thing_logits], thing_kernels, self.heatmap_pool_sizes,
            self.thing_score_thresh, self.thing_top_k,
        )  # fmt: skip
        if stages is not None:
            stages.update(candidate_scores=scores, candidate_classes=classes)
        thing_kernels, scores, classes = fuse_kernels(
            thing_kernels, scores, classes, self.kernel_fusion_thresh
        )
        features = encoded.flatten(1)
        thing_logits = (thing_kernels @ features).view(-1, *encoded.shape[1:])
        if stages is not None:
            stages.update(
                fused_scores=scores, fused_classes=classes, thing_mask_logits=thing_logits
            )
        thing_probs = thing_logits.sigmoid()
        binary = thing_probs > self.mask_thresh
        mean_inside = (thing_probs * binary).sum(dim=(1, 2)) / (binary.sum(dim=(1, 2)) + 1e-6)
        scores = scores * mean_inside
        top = scores.argsort(descending=True, stable=True)
        top = top[scores[top] >= self.min_score][: self.max_detections]
        scores, classes, thing_probs = scores[top], classes[top], thing_probs[top]

        pooled, kept = pool_stuff_kernels(
            [x.sigmoid() for x in stuff_logits], kernel_features, self.stuff_score_thresh
        )
        levels_kept = kept.sum(dim=0)
        stuff_kernels = (embed_stuff(pooled) * kept[..., None]).sum(dim=0)
        stuff_kernels = stuff_kernels / levels_kept.clamp(min=1)[:, None]
        stuff_logits = (stuff_kernels @ features).view(-1, *encoded.shape[1:])
        if stages is not None:
            stages.update(stuff_classes=torch.nonzero(levels_kept).flatten(),
                          stuff_mask_logits=stuff_logits[levels_kept > 0])  # fmt: skip
        stuff_masks = stuff_logits.sigmoid() * (levels_kept > 0)[:, None, None]  # no kernel: 0

        thing_probs = self._resize(thing_probs, image_size, output_size)
        stuff_masks = self._resize(stuff_masks, image_size, output_size)
        thing_masks, thing_boxes = masks_above(thing_probs, self.mask_thresh)
        instances = Instances(output_size)
        instances.scores = scores
        instances.pred_classes = classes
        instances.pred_masks = thing_masks
        instances.pred_boxes = Boxes(thing_boxes)
        panoptic = self._merge(instances, stuff_masks)
        return panoptic_output(panoptic, stuff_masks, instances)

    def _resize(self, masks: torch.Tensor, image_size, output_size) -> torch.Tensor:
        """Encoder-resolution masks (n, H_e, W_e) -> input scale, crop to the image, output size."""
        if masks.shape[0] == 0:
            return masks.new_zeros((0, *output_size))
        upsampled = F.interpolate(
            masks[None], scale_factor=self.encoder_stride, mode="bilinear", align_corners=False
        )[0]
        return crop_and_resize(upsampled, image_size, *output_size)

    def _merge(self, instances: Instances, stuff_masks: torch.Tensor):
        """
        Things pasted by score onto free pixels, then each stuff class where its mask is the
        most probable one (above the mask threshold) on the pixels left.
        """
        instance_index = paste_instances_by_score(
            instances.pred_masks, instances.scores, self.instance_score_thresh,
            self.overlap_thresh,
        )  # fmt: skip
        # The most probable stuff mask per pixel, without a threshold (as the official merge);
        # channel 0 is the "any thing" kernel, so label 0 there means no stuff segment.
        stuff_classes = class_argmax(stuff_masks)
        return panoptic_segments(
            stuff_classes, instance_index, instances.pred_classes, instances.scores,
            self.stuff_area_limit,
        )  # fmt: skip
