"""
The implementation a user would otherwise run for each method, with the same weights, so the
benchmark can time both on the same input.

* Panoptic FPN: panoptic_zoo runs detectron2's own ``PanopticFPN``; the reference is that model
  as detectron2 runs it, without this project's inference changes (batch norms not folded,
  NCHW backbone).
* Panoptic-DeepLab: detectron2's ``projects/panoptic_deeplab`` model, built from the same config
  and loaded with the same state dict (the heads share layers and parameter names).
* Panoptic FCN: the official code (Jia-Research-Lab/PanopticFCN, a detectron2 project, not on
  PyPI) from a local copy given with ``--panoptic-fcn-official-src``: it runs on this project's
  detectron2 as it is, with the checkpoint's weights in its key names through the converter
  (:mod:`panoptic_zoo.model_zoo.official_panoptic_fcn`); its panoptic output is compared with
  this project's. Without a copy, no reference run.
* UPSNet: the official code (uber-research/UPSNet) is not installable here (not on PyPI, it
  builds its own CUDA ops), so there is no reference run.
* Mask2Former: the official code (facebookresearch/Mask2Former) is not run by the benchmark; its
  parity on the same weights is checked by tools/parity/mask2former.py.

The references take the weights as the checkpoint holds them and run in a fresh process
(:mod:`.reference_process`), as a user running detectron2 would.
"""

from __future__ import annotations

from dataclasses import dataclass

from detectron2.config import CfgNode
from detectron2.config import get_cfg as get_detectron2_cfg
from detectron2.data import MetadataCatalog
from torch import nn

from ..model_zoo.official_panoptic_fcn import build_official_model, official_commit
from ..modeling.panoptic_deeplab.meta_arch import with_available_norms

__all__ = ["Reference", "build_reference", "reference_for"]

# Metadata entry detectron2's reference Panoptic-DeepLab reads its thing ids from.
_REFERENCE_METADATA = "panoptic_zoo_benchmark_reference"


@dataclass(frozen=True)
class Reference:
    name: str
    note: str
    runs_here: bool  # False: no reference implementation can run in this environment


def reference_for(cfg: CfgNode, panoptic_fcn_official_src: str | None = None) -> Reference:
    """The reference implementation of ``cfg``'s method (Panoptic FCN's: the official code at
    ``panoptic_fcn_official_src``, when given)."""
    meta_architecture = cfg.MODEL.META_ARCHITECTURE
    if meta_architecture == "PanopticFPN":
        return Reference(
            "detectron2 PanopticFPN", "the same detectron2 model, as detectron2 runs it", True
        )
    if meta_architecture == "PanopticDeepLabModel":
        return Reference("detectron2 projects/panoptic_deeplab", "same config and state dict", True)
    not_installable = "official code not installable here"
    if meta_architecture == "UPSNet":
        return Reference("uber-research/UPSNet", not_installable, False)
    if meta_architecture == "Mask2Former":
        note = "not timed here; parity on the same weights: tools/parity/mask2former.py"
        return Reference("facebookresearch/Mask2Former", note, False)
    if meta_architecture == "PanopticFCN":
        if panoptic_fcn_official_src is None:
            note = "official code not given (--panoptic-fcn-official-src)"
            return Reference("Jia-Research-Lab/PanopticFCN", note, False)
        commit = official_commit(panoptic_fcn_official_src)[:7]
        note = f"official code ({commit}), the same weights through the converter"
        return Reference("Jia-Research-Lab/PanopticFCN", note, True)
    return Reference("none", f"no reference known for {meta_architecture}", False)


def build_reference(
    cfg: CfgNode, model: nn.Module, panoptic_fcn_official_src: str | None = None
) -> nn.Module:
    """The reference model of ``cfg``'s method in eval mode, with the weights of ``model``: the
    method's model as its checkpoint holds it (no inference changes)."""
    meta_architecture = cfg.MODEL.META_ARCHITECTURE
    if meta_architecture == "PanopticFPN":
        return model  # detectron2's own class, built by detectron2's build_model
    if meta_architecture == "PanopticDeepLabModel":
        return _detectron2_panoptic_deeplab(cfg, model)
    if meta_architecture == "PanopticFCN" and panoptic_fcn_official_src is not None:
        return build_official_model(panoptic_fcn_official_src, cfg, model)
    raise ValueError(f"no reference implementation of {meta_architecture} runs here")


def _detectron2_panoptic_deeplab(cfg: CfgNode, model: nn.Module) -> nn.Module:
    from detectron2.projects.panoptic_deeplab import PanopticDeepLab, add_panoptic_deeplab_config

    cfg = with_available_norms(cfg)  # SyncBN -> BN exactly where the model got BN
    node = cfg.MODEL.PANOPTIC_DEEPLAB
    reference = get_detectron2_cfg()
    add_panoptic_deeplab_config(reference)
    reference.MODEL.BACKBONE = cfg.MODEL.BACKBONE.clone()
    reference.MODEL.RESNETS = cfg.MODEL.RESNETS.clone()
    reference.MODEL.PIXEL_MEAN = cfg.MODEL.PIXEL_MEAN
    reference.MODEL.PIXEL_STD = cfg.MODEL.PIXEL_STD
    reference.MODEL.DEVICE = str(model.device)
    reference.INPUT.CROP = cfg.INPUT.CROP.clone()  # sizes ASPP's image pooling, as in ours
    for head, name in (
        ("SEM_SEG_HEAD", "PanopticDeepLabSemSegHead"),
        ("INS_EMBED_HEAD", "PanopticDeepLabInsEmbedHead"),
    ):
        ours, theirs = node[head], reference.MODEL[head]
        for key, value in ours.items():
            theirs[key] = value
        theirs.NAME = name
        # The reference lists the projected (low-level) features; ours: all but the ASPP input.
        theirs.PROJECT_FEATURES = list(ours.IN_FEATURES[:-1])
    reference.MODEL.SEM_SEG_HEAD.NUM_CLASSES = model.postprocessor.ids.num_classes
    reference.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = node.USE_DEPTHWISE_SEPARABLE_CONV
    theirs = reference.MODEL.PANOPTIC_DEEPLAB
    theirs.USE_DEPTHWISE_SEPARABLE_CONV = node.USE_DEPTHWISE_SEPARABLE_CONV
    theirs.STUFF_AREA = node.STUFF_AREA
    theirs.CENTER_THRESHOLD = node.CENTER_THRESHOLD
    theirs.NMS_KERNEL = node.NMS_KERNEL
    theirs.TOP_K_INSTANCE = node.TOP_K_INSTANCE
    theirs.SIZE_DIVISIBILITY = model.size_divisibility  # the same padded input
    theirs.PREDICT_INSTANCES = True  # ours predicts instances too: the same work
    reference.DATASETS.TRAIN = (_REFERENCE_METADATA,)
    if _REFERENCE_METADATA in MetadataCatalog.list():
        MetadataCatalog.remove(_REFERENCE_METADATA)  # a previous method may have set other ids
    MetadataCatalog.get(_REFERENCE_METADATA).set(
        thing_dataset_id_to_contiguous_id={i: i for i in model.postprocessor.ids.thing_ids},
        label_divisor=model.postprocessor.label_divisor,
    )
    built = PanopticDeepLab(reference).to(model.device).eval()
    built.load_state_dict(model.state_dict())
    return built
