"""
Panoptic FCN inference for one image, in tensor code except the final panoptic merge (a loop
over the kept segments, as in detectron2's Panoptic FPN combine step):

1. thing heatmaps smoothed (averaged with their 3x3 mean), peaks kept by 3x3 max-pool NMS; the
   top-k peaks of each level above the score threshold become candidates with their kernels;
2. class-aware kernel fusion: candidates whose kernels have cosine similarity >= the threshold
   with a higher-scored candidate of the same class are averaged into it;
3. stuff kernels: per class, the mean kernel over the positions of the finest level whose stuff
   score passes the threshold;
4. masks = sigmoid(kernel . encoded features); things are rescored by their mean probability
   inside the mask (prob > mask threshold);
5. merge: things by score (>= instance threshold, dropped when more than the overlap threshold
   of the mask is already taken), then stuff (argmax of the stuff masks, area limit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ...postprocess import (
    class_argmax,
    crop_and_resize,
    masks_above,
    panoptic_segments,
    paste_instances_by_score,
)

__all__ = ["PanopticFCNInference", "fuse_kernels", "select_thing_candidates"]


def select_thing_candidates(
    thing_probs: list[torch.Tensor], kernels: list[torch.Tensor], score_thresh: float, top_k: int
):
    """
    Candidates from per-level heatmaps (T, h_l, w_l) and kernels (C, h_l, w_l): scores (n,),
    classes (n,), kernels (n, C), ordered by level then score.
    """
    scores, classes, picked = [], [], []
    for probs, level_kernels in zip(thing_probs, kernels):
        # Half the score, half its 3x3 mean: a lone spike counts less than a coherent peak.
        smoothed = (probs + F.avg_pool2d(probs[None], 3, stride=1, padding=1)[0]) / 2
        peaks = smoothed == F.max_pool2d(smoothed[None], 3, stride=1, padding=1)[0]
        flat = torch.where(peaks, smoothed, torch.zeros_like(smoothed)).flatten()
        values, index = flat.topk(min(top_k, flat.numel()))
        keep = values >= score_thresh
        values, index = values[keep], index[keep]
        positions = index % (probs.shape[1] * probs.shape[2])
        scores.append(values)
        classes.append(index // (probs.shape[1] * probs.shape[2]))
        picked.append(level_kernels.flatten(1)[:, positions].T)
    return torch.cat(scores), torch.cat(classes), torch.cat(picked)


def fuse_kernels(
    kernels: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, similarity_thresh: float
):
    """
    Class-aware kernel fusion. A candidate survives unless a higher-scored candidate of its class
    has cosine similarity >= ``similarity_thresh`` with it; each survivor's kernel becomes the
    mean of its own and of its similar lower-scored same-class candidates. Returns (kernels,
    scores, classes) of the survivors, by decreasing score.
    """
    order = scores.argsort(descending=True)
    kernels, scores, classes = kernels[order], scores[order], classes[order]
    unit = F.normalize(kernels, dim=1)
    similar = (unit @ unit.T >= similarity_thresh) & (classes[:, None] == classes[None, :])
    # Every candidate is similar to itself. (Not fill_diagonal_: torch.jit cannot trace it with
    # a bool, and fvcore's FLOP count traces the model.)
    similar |= torch.eye(len(similar), dtype=torch.bool, device=similar.device)
    # similar[j, i] with j < i: i merges into the higher-scored j.
    merged_into_higher = torch.triu(similar, diagonal=1).any(dim=0)
    groups = similar[~merged_into_higher].float()
    fused = groups @ kernels / groups.sum(dim=1, keepdim=True)
    return fused, scores[~merged_into_higher], classes[~merged_into_higher]


class PanopticFCNInference:
    def __init__(
        self,
        *,
        thing_score_thresh: float,
        stuff_score_thresh: float,
        thing_top_k: int,
        kernel_fusion_thresh: float,
        mask_thresh: float,
        instance_score_thresh: float,
        overlap_thresh: float,
        stuff_area_limit: int,
        max_detections: int,
        encoder_stride: int,
    ):
        self.thing_score_thresh = thing_score_thresh
        self.stuff_score_thresh = stuff_score_thresh
        self.thing_top_k = thing_top_k
        self.kernel_fusion_thresh = kernel_fusion_thresh
        self.mask_thresh = mask_thresh
        self.instance_score_thresh = instance_score_thresh
        self.overlap_thresh = overlap_thresh
        self.stuff_area_limit = stuff_area_limit
        self.max_detections = max_detections
        self.encoder_stride = encoder_stride

    def __call__(
        self,
        thing_logits: list[torch.Tensor],
        stuff_logits: torch.Tensor,
        thing_kernels: list[torch.Tensor],
        stuff_kernels: torch.Tensor,
        encoded: torch.Tensor,
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> dict:
        """
        One image's predictions, already cropped to the image: per-level thing logits
        (T, h_l, w_l) and thing kernels (C, h_l, w_l), stuff logits (S+1, h, w) and stuff
        kernels (C, h, w) of the finest level, encoded features (C, H_e, W_e). ``image_size``
        is the network input size, ``output_size`` the size to predict at.
        """
        scores, classes, thing_kernels = select_thing_candidates(
            [x.sigmoid() for x in thing_logits], thing_kernels, self.thing_score_thresh,
            self.thing_top_k,
        )  # fmt: skip
        thing_kernels, scores, classes = fuse_kernels(
            thing_kernels, scores, classes, self.kernel_fusion_thresh
        )
        features = encoded.flatten(1)
        thing_probs = (thing_kernels @ features).sigmoid().view(-1, *encoded.shape[1:])
        binary = thing_probs > self.mask_thresh
        mean_inside = (thing_probs * binary).sum(dim=(1, 2)) / binary.sum(dim=(1, 2)).clamp(min=1)
        scores = scores * mean_inside
        top = scores.argsort(descending=True)[: self.max_detections]
        top = top[scores[top] > 0]  # empty masks score 0
        scores, classes, thing_probs = scores[top], classes[top], thing_probs[top]

        stuff_probs = stuff_logits.sigmoid().flatten(1)
        positions = (stuff_probs >= self.stuff_score_thresh).float()
        counts = positions.sum(dim=1)
        class_kernels = positions @ stuff_kernels.flatten(1).T / counts.clamp(min=1)[:, None]
        stuff_masks = (class_kernels @ features).sigmoid().view(-1, *encoded.shape[1:])
        stuff_masks = stuff_masks * (counts > 0)[:, None, None]  # classes without kernels: 0

        thing_probs = self._resize(thing_probs, image_size, output_size)
        stuff_masks = self._resize(stuff_masks, image_size, output_size)
        thing_masks, thing_boxes = masks_above(thing_probs, self.mask_thresh)
        instances = Instances(output_size)
        instances.scores = scores
        instances.pred_classes = classes
        instances.pred_masks = thing_masks
        instances.pred_boxes = Boxes(thing_boxes)
        panoptic = self._merge(instances, stuff_masks)
        return {"panoptic_seg": panoptic, "sem_seg": stuff_masks, "instances": instances}

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
