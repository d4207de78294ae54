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
* post-processing is :mod:`.postprocess` (batched tensor code, same result);
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
from detectron2.structures import ImageList
from detectron2.utils import comm
from torch import nn

from ..images import normalized_image_batch
from . import heads  # noqa: F401  (registers the heads)
from .ids import UnifiedIds
from .postprocess import PanopticDeepLabPostprocessor

__all__ = ["PanopticDeepLabModel", "with_available_norms"]

logger = logging.getLogger(__name__)

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
        size_divisibility: int,
        postprocessor: PanopticDeepLabPostprocessor,
    ):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = size_divisibility
        self.postprocessor = postprocessor

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
            "size_divisibility": size_divisibility,
            "postprocessor": PanopticDeepLabPostprocessor(
                ids=UnifiedIds.from_config(cfg),
                label_divisor=node.LABEL_DIVISOR,
                stuff_area=node.STUFF_AREA,
                center_threshold=node.CENTER_THRESHOLD,
                nms_kernel=node.NMS_KERNEL,
                top_k=node.TOP_K_INSTANCE,
            ),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self._images(batched_inputs)
        return self.losses(self.backbone(images.tensor), batched_inputs)

    def _images(self, batched_inputs: list[dict]) -> ImageList:
        return normalized_image_batch(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )

    def inference(self, batched_inputs: list[dict]) -> list[dict]:
        images = self._images(batched_inputs)
        features = self.backbone(images.tensor)
        # The semantic head last: its final step, upsampling 133-class logits to the input
        # resolution, is post-processing (after the last layer, as the other methods' resizing).
        center, offset, _, _ = self.ins_embed_head(features)
        sem_seg, _ = self.sem_seg_head(features)
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            results.append(
                self.postprocessor(sem_seg[i], center[i], offset[i], image_size, (height, width))
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
