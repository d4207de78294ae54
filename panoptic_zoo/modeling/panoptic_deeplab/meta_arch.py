"""
``PanopticDeepLabModel``: Panoptic-DeepLab (Cheng et al., CVPR 2020) as a configurable
detectron2 meta-architecture with the project's output contract.

Compared with detectron2's reference ``PanopticDeepLab`` (same backbone and heads, same
parameter names):

* everything comes through ``from_config``; nothing reads ``MetadataCatalog``, so a model
  evaluates on any dataset with the configured categories (:mod:`.ids`);
* ``SyncBN`` becomes ``BN`` when the run is not distributed or on the CPU, where
  ``nn.SyncBatchNorm`` cannot run;
* batches are padded to the backbone's output stride by default, so predictions (input/4 after
  the decoder) line up with targets for any image size;
* offsets are rescaled with the prediction when the output size differs from the input size;
* post-processing is :mod:`.inference` (batched tensor code, same result);
* outputs: ``panoptic_seg`` = (segment ids, 0 = void, ``segments_info`` in separated ids),
  ``sem_seg`` = stuff scores with all thing classes merged into class 0, and ``instances`` =
  the thing segments with the paper's scores, what the panoptic, semantic and COCO instance
  evaluators read.
"""

from __future__ import annotations

import logging

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY, build_backbone
from detectron2.projects.panoptic_deeplab import INS_EMBED_BRANCHES_REGISTRY
from detectron2.structures import BitMasks, ImageList, Instances
from detectron2.utils import comm
from torch import nn

from ...postprocess import class_argmax, class_logsumexps, crop_and_resize
from ..images import normalized_image_batch
from . import heads  # noqa: F401  (registers the heads)
from .ids import UnifiedIds
from .inference import get_panoptic_segmentation

__all__ = ["PanopticDeepLabModel", "with_available_norms"]

logger = logging.getLogger(__name__)

VOID = -1


def with_available_norms(cfg):
    """
    ``cfg``, or a copy of it where "SyncBN" is "BN" when the run is single-process or on the
    CPU (``nn.SyncBatchNorm`` needs an initialized process group and CUDA tensors).
    """
    if comm.get_world_size() > 1 and cfg.MODEL.DEVICE != "cpu":
        return cfg
    node = cfg.MODEL.PANOPTIC_DEEPLAB
    norm_keys = {
        "MODEL.RESNETS.NORM": cfg.MODEL.RESNETS,
        "MODEL.PANOPTIC_DEEPLAB.SEM_SEG_HEAD.NORM": node.SEM_SEG_HEAD,
        "MODEL.PANOPTIC_DEEPLAB.INS_EMBED_HEAD.NORM": node.INS_EMBED_HEAD,
    }
    replaced = [key for key, parent in norm_keys.items() if parent.NORM == "SyncBN"]
    if not replaced:
        return cfg
    logger.warning(f"Not a distributed GPU run: {', '.join(replaced)} SyncBN -> BN.")
    cfg = cfg.clone()
    cfg.defrost()
    for key in replaced:
        cfg.merge_from_list([key, "BN"])
    return cfg


@META_ARCH_REGISTRY.register()
class PanopticDeepLabModel(nn.Module):
    """
    Backbone -> semantic branch (unified classes) + instance branch (center heatmap, offsets)
    -> losses in training, panoptic/semantic predictions in inference.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        ins_embed_head: nn.Module,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        ids: UnifiedIds,
        size_divisibility: int,
        label_divisor: int,
        stuff_area: int,
        center_threshold: float,
        nms_kernel: int,
        top_k: int,
    ):
        super().__init__()
        if label_divisor <= top_k:
            raise ValueError(
                f"MODEL.PANOPTIC_DEEPLAB.LABEL_DIVISOR ({label_divisor}) must exceed "
                f"TOP_K_INSTANCE ({top_k})"
            )
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.ids = ids
        self.size_divisibility = size_divisibility
        self.label_divisor = label_divisor
        self.stuff_area = stuff_area
        self.center_threshold = center_threshold
        self.nms_kernel = nms_kernel
        self.top_k = top_k

    @classmethod
    def from_config(cls, cfg):
        cfg = with_available_norms(cfg)
        node = cfg.MODEL.PANOPTIC_DEEPLAB
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        size_divisibility = node.SIZE_DIVISIBILITY
        if size_divisibility <= 0:
            # The decoder's output is 1/COMMON_STRIDE of the padded input only when the input
            # divides by the coarsest feature's stride.
            strides = [shape.stride for shape in shapes.values()]
            size_divisibility = max(backbone.size_divisibility, *strides)
        return {
            "backbone": backbone,
            "sem_seg_head": SEM_SEG_HEADS_REGISTRY.get(node.SEM_SEG_HEAD.NAME)(cfg, shapes),
            "ins_embed_head": INS_EMBED_BRANCHES_REGISTRY.get(node.INS_EMBED_HEAD.NAME)(
                cfg, shapes
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ids": UnifiedIds.from_config(cfg),
            "size_divisibility": size_divisibility,
            "label_divisor": node.LABEL_DIVISOR,
            "stuff_area": node.STUFF_AREA,
            "center_threshold": node.CENTER_THRESHOLD,
            "nms_kernel": node.NMS_KERNEL,
            "top_k": node.TOP_K_INSTANCE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        images = normalized_image_batch(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )
        features = self.backbone(images.tensor)
        if self.training:
            return self.losses(features, batched_inputs)
        # The semantic head last: its final step, upsampling 133-class logits to the input
        # resolution, is post-processing (after the last layer, as the other methods' resizing).
        center, offset, _, _ = self.ins_embed_head(features)
        sem_seg, _ = self.sem_seg_head(features)
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            results.append(
                self.postprocess(sem_seg[i], center[i], offset[i], image_size, height, width)
            )
        return results

    def _padded(self, batched_inputs: list[dict], key: str, pad_value: float = 0) -> torch.Tensor:
        targets = [x[key].to(self.device) for x in batched_inputs]
        return ImageList.from_tensors(targets, self.size_divisibility, pad_value).tensor

    def losses(self, features, batched_inputs: list[dict]) -> dict[str, torch.Tensor]:
        ignore_value = self.sem_seg_head.ignore_value
        _, losses = self.sem_seg_head(
            features,
            self._padded(batched_inputs, "sem_seg", ignore_value),
            self._padded(batched_inputs, "sem_seg_weights"),
        )
        _, _, center_losses, offset_losses = self.ins_embed_head(
            features,
            self._padded(batched_inputs, "center").unsqueeze(1),
            self._padded(batched_inputs, "center_weights"),
            self._padded(batched_inputs, "offset"),
            self._padded(batched_inputs, "offset_weights"),
        )
        return {**losses, **center_losses, **offset_losses}

    def postprocess(
        self,
        sem_seg: torch.Tensor,
        center: torch.Tensor,
        offset: torch.Tensor,
        image_size: tuple[int, int],
        height: int,
        width: int,
    ) -> dict:
        """One image's padded network outputs -> its predictions at ``height`` x ``width``."""
        sem_seg = crop_and_resize(sem_seg, image_size, height, width)
        center = crop_and_resize(center, image_size, height, width)
        offset = crop_and_resize(offset, image_size, height, width)
        # Offsets are lengths in input pixels: rescale them with the image.
        scale = offset.new_tensor([height / image_size[0], width / image_size[1]])
        offset = offset * scale[:, None, None]
        logsumexp_all, logsumexp_things = class_logsumexps(
            sem_seg, slice(0, self.ids.num_thing_classes)
        )
        panoptic, _ = get_panoptic_segmentation(
            class_argmax(sem_seg)[None],
            center,
            offset[None],
            thing_ids=self.ids.thing_ids,
            num_classes=self.ids.num_classes,
            label_divisor=self.label_divisor,
            stuff_area=self.stuff_area,
            void_label=VOID,
            threshold=self.center_threshold,
            nms_kernel=self.nms_kernel,
            top_k=self.top_k,
        )
        segment_ids, segments_info = self.segments(panoptic[0])
        instances = self.instances(segment_ids, segments_info, sem_seg, logsumexp_all, center[0])
        # Thing segments carry their instance's score, as the other methods' do (panoptic AP).
        things = (info for info in segments_info if info["isthing"])
        for info, score in zip(things, instances.scores.tolist()):
            info["score"] = score
        return {
            "panoptic_seg": (segment_ids, segments_info),
            # The semantic evaluator's classes: things merged into class 0 (log of the summed
            # thing probabilities), then the stuff classes.
            "sem_seg": torch.cat((logsumexp_things[None], sem_seg[self.ids.num_thing_classes :])),
            "instances": instances,
        }

    def segments(self, panoptic: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Panoptic labels (``class * label_divisor + instance``, void -1) -> the project's
        (segment ids with 0 = void, ``segments_info`` in separated ids)."""
        labels, segment_ids, areas = torch.unique(panoptic, return_inverse=True, return_counts=True)
        if len(labels) and labels[0] == VOID:
            labels, areas = labels[1:], areas[1:]  # sorted first: void is segment id 0
        else:
            segment_ids = segment_ids + 1
        segments_info = []
        for segment_id, (label, area) in enumerate(zip(labels.tolist(), areas.tolist()), 1):
            category_id, isthing = self.ids.to_separated(label // self.label_divisor)
            segments_info.append(
                {"id": segment_id, "category_id": category_id, "isthing": isthing, "area": area}
            )
        return segment_ids.to(torch.int32), segments_info

    def instances(
        self,
        segment_ids: torch.Tensor,
        segments_info: list[dict],
        sem_seg: torch.Tensor,
        logsumexp_all: torch.Tensor,
        center: torch.Tensor,
    ) -> Instances:
        """
        The thing segments as detectron2 ``Instances`` for instance AP, scored as the paper
        (and detectron2's reference) does: the mean semantic probability of the segment's class
        over its pixels times the center heatmap at the segment's centroid (coordinates
        truncated to integers). One pass over the pixels for all segments.
        """
        flat_ids = segment_ids.flatten().long()
        num_ids = len(segments_info) + 1
        unified = [0] + [self.ids.to_unified(x["category_id"], x["isthing"]) for x in segments_info]
        pixel_class = torch.tensor(unified, device=flat_ids.device)[flat_ids]
        # Softmax probability of each pixel's own class only (no [classes, H, W] softmax);
        # ``logsumexp_all``: the log-sum-exp of ``sem_seg`` over the classes.
        height, width = segment_ids.shape
        own_logit = sem_seg.gather(0, pixel_class.view(1, height, width))[0].flatten()
        own_class_prob = (own_logit - logsumexp_all.flatten()).exp()
        ys, xs = torch.meshgrid(
            torch.arange(height, device=flat_ids.device, dtype=torch.float64),
            torch.arange(width, device=flat_ids.device, dtype=torch.float64),
            indexing="ij",
        )
        counts = torch.bincount(flat_ids, minlength=num_ids).clamp(min=1)
        mean_prob = torch.bincount(flat_ids, own_class_prob.double(), num_ids) / counts
        center_y = (torch.bincount(flat_ids, ys.flatten(), num_ids) / counts).long()
        center_x = (torch.bincount(flat_ids, xs.flatten(), num_ids) / counts).long()

        things = [x for x in segments_info if x["isthing"]]
        thing_ids = torch.tensor(
            [x["id"] for x in things], device=flat_ids.device, dtype=torch.long
        )
        instances = Instances((height, width))
        instances.pred_masks = segment_ids[None] == thing_ids[:, None, None]
        instances.pred_classes = torch.tensor(
            [x["category_id"] for x in things], device=flat_ids.device, dtype=torch.long
        )
        instances.scores = (
            mean_prob[thing_ids].float() * center[center_y[thing_ids], center_x[thing_ids]]
        )
        instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
        return instances
