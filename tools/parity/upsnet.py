#!/usr/bin/env python
"""
UPSNet against the official code (uber-research/UPSNet): the official pure-PyTorch/NumPy pieces,
imported from a local clone, and this project's run on the same inputs; prints each comparison
and writes the golden file that ``tests/modeling/upsnet/test_parity.py`` replays without the
official code.

    OMP_NUM_THREADS=1 .venv/bin/python tools/parity/upsnet.py --official-src PATH/TO/UPSNet

Cases (official piece -> project piece):

* ``network``: the FPN (with and without ``fpn_with_gap``), the semantic head ``FCNHead`` (3 and
  2 deformable layers), the box head ``RCNN`` and the mask head ``MaskBranch`` with random
  weights; their state dicts go through ``convert_official_upsnet`` into the project's modules
  (built from the COCO and Cityscapes configs), whose outputs must equal the official ones.
* ``train_logits``: ``SegTerm`` + ``MaskTerm`` + the unknown logit (the official training Z) ->
  ``panoptic_logits`` / ``paste_mask_logits``.
* ``targets``: the dataset's 1/4 nearest resizing (``gt_list_to_blob``) + ``MaskMatching`` ->
  ``subsample_labels`` + ``panoptic_target``, with and without the unknown class.
* ``losses``: the official loss modules (panoptic and RoI: mean over all pixels) ->
  ``mean_cross_entropy``; the RoI ground truth (OpenCV's nearest resize of the rounded box
  crop, as the dataset does) -> ``crop_semantic_target``.
* ``candidates``: ``MaskROI`` in its panoptic setting (class-agnostic, 0.6, NMS 0.5) ->
  ``panoptic_candidates``.
* ``panoptic``: ``MaskRemoval`` + ``SegTerm`` + the argmax of Z, the test script's resizing to
  the original size and ``get_unified_pan_result`` -> ``panoptic_postprocess``; with candidates,
  with none (the all-zero channel) and with only empty masks.

Printed only (not in the golden file): the official ResNet-50 ``ResNetBackbone`` against the
converted bottom-up backbone (its weights are too large to keep).

Boxes: the official code keeps Detectron's inclusive far corner (the last pixel inside),
detectron2 the corner one past the box, so a project box (x0, y0, x1, y1) is the official
(x0, y0, x1 - 1, y1 - 1); both then round to pixels alike (``pixel_boxes``), so the panoptic
cases use real-valued boxes. The candidate case feeds integer proposals with zero deltas (the
box coders differ: detectron2 drops Detectron's "+1"). Pass: identical integer outputs and
panoptic maps, floating outputs within 1e-5 relative (float rounding).

Stubbed: only the compiled extensions the official modules import (Cython box overlaps, NMS and
anchors; the CUDA deformable convolution and RoIAlign). The deformable convolution runs through
``torchvision.ops.deform_conv2d`` (the same DCNv1 offset layout); NMS through the official
NumPy ``py_nms``; RoIAlign is not run (the heads are fed pooled features). CUDA-only calls
(``.cuda()``, ``pin_memory()``, device ids) are made identities on CPU, and two Python 3.11
incompatibilities are shimmed (``collections.Sequence``; ``easydict`` if it is not installed).
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import contextlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from panoptic_zoo.config import get_cfg  # noqa: E402
from panoptic_zoo.model_zoo.converters import convert_official_upsnet  # noqa: E402
from panoptic_zoo.modeling.upsnet.meta_arch import subsample_labels  # noqa: E402
from panoptic_zoo.modeling.upsnet.panoptic_head import (  # noqa: E402
    mean_cross_entropy,
    panoptic_candidates,
    panoptic_logits,
    panoptic_target,
    paste_mask_logits,
    pixel_boxes,
)
from panoptic_zoo.modeling.upsnet.postprocess import panoptic_postprocess  # noqa: E402
from panoptic_zoo.modeling.upsnet.semantic_head import crop_semantic_target  # noqa: E402

GOLDEN = REPO / "tests" / "modeling" / "upsnet" / "golden" / "upsnet_parity.pt"
NUM_STUFF, NUM_THINGS = 3, 4  # semantic channels: stuff 0..2, things 3..6
FPN_DIM, BOX_FC_DIM, MASK_CONV_DIM = 16, 64, 32
MASK_SIZE = 28
RELATIVE_TOLERANCE = 1e-5
IGNORE = 255
# Project configs of the official releases' network variants.
NETWORK_VARIANTS = {
    "coco": ("configs/coco/upsnet_R_50_1x.yaml", True, 3),
    "cityscapes": ("configs/cityscapes/upsnet_R_50.yaml", False, 2),
}


# --- the project's side (also replayed by the tests) ------------------------------------------


class _GivenFeatures(torch.nn.Module):
    """Stands in for a backbone's bottom-up part or a RoI pooler: returns the given tensors."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, *args):
        return self.output


def project_model(variant: str, official_state: dict, bottom_up_given: bool = False):
    """The model of the variant's config (small widths) with the converted official weights."""
    from detectron2.modeling import build_model

    config, with_gap, layers = NETWORK_VARIANTS[variant]
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / config))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", FPN_DIM,
        "MODEL.ROI_HEADS.NUM_CLASSES", NUM_THINGS, "MODEL.UPSNET.NUM_STUFF_CLASSES", NUM_STUFF,
        "MODEL.UPSNET.SEMANTIC_HEAD.CONV_DIMS", [FPN_DIM] * (layers - 2) + [128, 128],
        "MODEL.ROI_BOX_HEAD.FC_DIM", BOX_FC_DIM, "MODEL.ROI_MASK_HEAD.CONV_DIM", MASK_CONV_DIM,
    ])  # fmt: skip
    if cfg.MODEL.UPSNET.FPN_GLOBAL_POOLING != with_gap:
        raise AssertionError(f"{config}: FPN_GLOBAL_POOLING should be {with_gap}")
    model = build_model(cfg).eval()
    conversion = convert_official_upsnet(official_state)
    if conversion.unused or conversion.notes:
        raise AssertionError(f"inexact conversion: {conversion.unused} {conversion.notes}")
    missing, unexpected = model.load_state_dict(conversion.state_dict, strict=False)
    not_given = [k for k in missing if not k.startswith("proposal_")]
    if not bottom_up_given:
        not_given = [k for k in not_given if not k.startswith("backbone.bottom_up.")]
    if unexpected or not_given:
        raise AssertionError(f"converted keys do not fit: {unexpected} {not_given}")
    return model


def project_network(variant: str, official_state: dict, inputs: dict) -> dict:
    """The project's modules, from the variant's config with converted official weights."""
    model = project_model(variant, official_state)
    fpn = model.backbone
    with torch.no_grad():
        fpn.bottom_up = _GivenFeatures(dict(zip(("res2", "res3", "res4", "res5"), inputs["res"])))
        features = fpn(None)
        levels = {f"p{k}": x for k, x in zip(range(2, 6), inputs["p"])}
        semantic = model.semantic_head(levels)
        box_head = model.roi_heads.box_head
        scores, deltas = model.roi_heads.box_predictor(box_head(inputs["box_pooled"]))
        masks = model.roi_heads.mask_head.layers(inputs["mask_pooled"])
    return {
        "fpn": [features[f"p{k}"] for k in range(2, 7)],
        "semantic": semantic,
        "box_scores": scores,
        "box_deltas": deltas,
        "masks": masks,
    }


def official_network_in_project_layout(outputs: dict) -> dict:
    """Detectron's background class first -> detectron2's layout (last, or dropped)."""
    cls_score = outputs["box_scores"]
    return {
        **outputs,
        "box_scores": torch.cat([cls_score[:, 1:], cls_score[:, :1]], dim=1),
        "box_deltas": outputs["box_deltas"][:, 4:],
        "masks": outputs["masks"][:, 1:],
    }


def project_train_logits(inputs: dict) -> torch.Tensor:
    """Z at stride 4 from ground-truth boxes at the input resolution (detectron2's corners)."""
    semantic = inputs["semantic"][0]
    height, width = semantic.shape[-2:]
    mask_boxes, semantic_boxes = pixel_boxes(inputs["boxes"], 1 / 4)
    pasted = paste_mask_logits(inputs["mask_logits"], mask_boxes, height, width)
    classes = inputs["classes"]
    return panoptic_logits(semantic, NUM_STUFF, semantic_boxes, classes, pasted, True)[None]


def project_targets(inputs: dict, with_unknown: bool) -> torch.Tensor:
    semantic, masks = inputs["semantic"], inputs["masks"]
    image_size = semantic.shape
    padded_size = [-(-n // 32) * 32 for n in image_size]
    padded = torch.full(padded_size, IGNORE, dtype=semantic.dtype)
    padded[: image_size[0], : image_size[1]] = semantic
    padded_masks = torch.zeros((len(masks), *padded_size), dtype=torch.bool)
    padded_masks[:, : image_size[0], : image_size[1]] = masks
    labels = subsample_labels(padded, image_size, 4, IGNORE)
    kept = inputs["keep"] if with_unknown else torch.arange(len(masks))
    kept_masks = subsample_labels(padded_masks[kept], image_size, 4, False)
    target = panoptic_target(labels, NUM_STUFF, kept_masks, with_unknown, -1, IGNORE)
    return torch.where(target == -1, IGNORE, target)[None]


def project_losses(inputs: dict) -> dict:
    roi_targets = torch.cat(
        [
            crop_semantic_target(inputs["roi_semantic"], b[None], MASK_SIZE)
            for b in inputs["roi_boxes"]
        ]
    )
    return {
        "panoptic": mean_cross_entropy(
            inputs["panoptic_logits"], inputs["panoptic_target"], IGNORE
        ),
        "roi": mean_cross_entropy(inputs["roi_logits"], inputs["roi_target"], IGNORE),
        "roi_target": roi_targets,
    }


def project_candidates(inputs: dict) -> dict:
    """Official Detectron boxes (inclusive far corner) as the project's: far corner + 1."""
    rois = inputs["rois"] + torch.tensor([0.0, 0.0, 1.0, 1.0])
    probabilities = inputs["class_probabilities"]
    boxes, scores, classes = panoptic_candidates(
        rois.repeat(1, NUM_THINGS),
        torch.cat([probabilities[:, 1:], probabilities[:, :1]], dim=1),
        tuple(inputs["image_size"]),
        0.6,
        0.5,
        int(inputs["max_candidates"]),
    )
    return {"boxes": boxes, "scores": scores, "classes": classes}


def project_panoptic(inputs: dict) -> torch.Tensor:
    """(H, W, 2): semantic channel (stuff 0..S-1, things S.., 255 void) and instance id."""
    height, width = inputs["image_size"]
    candidates = Instances(
        (height, width), pred_boxes=Boxes(inputs["boxes"]), scores=inputs["scores"],
        pred_classes=inputs["classes"],
    )  # fmt: skip
    segments, infos = panoptic_postprocess(
        inputs["semantic"][0, :, :height, :width], NUM_STUFF, candidates, inputs["mask_logits"],
        0.3, True, int(inputs["stuff_area_limit"]), tuple(inputs["output_size"]),
    )  # fmt: skip
    category = torch.full_like(segments, IGNORE, dtype=torch.long)
    instance = torch.zeros_like(segments, dtype=torch.long)
    for info in infos:
        region = segments == info["id"]
        if info["isthing"]:
            category[region] = NUM_STUFF + info["category_id"]
            instance[region] = info["id"]
        else:
            category[region] = info["category_id"] - 1
    return torch.stack([category, instance], dim=-1)


def same_panoptic(official: torch.Tensor, project: torch.Tensor) -> bool:
    """Equal categories everywhere and the same instance partition of the thing pixels."""
    if not torch.equal(official[..., 0], project[..., 0]):
        return False
    things = official[..., 0] >= NUM_STUFF
    things &= official[..., 0] != IGNORE
    pairs = torch.unique(torch.stack([official[..., 1][things], project[..., 1][things]]), dim=1)
    return len(torch.unique(pairs[0])) == len(torch.unique(pairs[1])) == pairs.shape[1]


def close(official: torch.Tensor, project: torch.Tensor) -> float:
    """Largest difference relative to the official output's largest magnitude."""
    scale = official.abs().max().clamp(min=1e-12)
    return float((official - project).abs().max() / scale)


def compare(golden: dict) -> list[tuple[str, bool, str]]:
    """Each check's name, whether it passes and what was measured."""
    results = []

    def check_close(name, official, project):
        if official.shape != project.shape:
            results.append(
                (name, False, f"shapes {tuple(official.shape)} != {tuple(project.shape)}")
            )
            return
        error = close(official, project)
        results.append((name, error <= RELATIVE_TOLERANCE, f"max relative difference {error:.2e}"))

    def check_equal(name, official, project):
        equal = official.shape == project.shape and torch.equal(official, project)
        results.append((name, equal, "identical" if equal else "differ"))

    for variant, case in golden["network"].items():
        project = project_network(variant, case["official_state"], case["inputs"])
        official = official_network_in_project_layout(case["official"])
        for level, (o, p) in enumerate(zip(official["fpn"], project["fpn"]), start=2):
            check_close(f"network/{variant}/fpn p{level}", o, p)
        for key in ("semantic", "box_scores", "box_deltas", "masks"):
            check_close(f"network/{variant}/{key}", official[key], project[key])

    case = golden["train_logits"]
    z = project_train_logits(case["inputs"])
    check_close("train_logits/Z", case["official"], z)
    check_equal("train_logits/argmax", case["official"].argmax(dim=1), z.argmax(dim=1))

    case = golden["targets"]
    for with_unknown in (True, False):
        name = "with_unknown" if with_unknown else "without_unknown"
        check_equal(f"targets/{name}", case[name], project_targets(case["inputs"], with_unknown))

    case = golden["losses"]
    project = project_losses(case["inputs"])
    for key in ("panoptic", "roi"):
        check_close(f"losses/{key}", case["official"][key], project[key])
    check_equal("losses/roi_target", case["official"]["roi_target"], project["roi_target"])

    case = golden["candidates"]
    project = project_candidates(case["inputs"])
    official = case["official"]
    check_equal("candidates/classes", official["classes"], project["classes"])
    check_equal("candidates/boxes", official["boxes"] + torch.tensor([0.0, 0.0, 1.0, 1.0]),
                project["boxes"])  # fmt: skip
    check_close("candidates/scores", official["scores"], project["scores"])

    for name, case in golden["panoptic"].items():
        project = project_panoptic(case["inputs"])
        equal = same_panoptic(case["official"].long(), project)
        results.append((f"panoptic/{name}", equal, "identical" if equal else "differ"))
    return results


# --- the official side (needs the clone) ------------------------------------------------------


class _CompiledExtension(types.ModuleType):
    """A compiled extension of the official code that is not built here; unusable."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is a compiled extension (stubbed)")

        return unavailable


class _EasyDict(dict):
    """Attribute access to a dict: what the official config module uses of ``easydict``."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


@contextlib.contextmanager
def _cpu_only_calls():
    """The official modules' CUDA-only calls, made identities on CPU."""
    saved = torch.Tensor.cuda, torch.Tensor.pin_memory, torch.Tensor.get_device
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    torch.Tensor.get_device = lambda self: "cpu"
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.pin_memory, torch.Tensor.get_device = saved


class _TorchvisionDeformConv(torch.autograd.Function):
    """The official ``DeformConvFunction.apply`` signature over torchvision's kernel."""

    @staticmethod
    def apply(data, offset, weight, bias, in_channels, out_channels, kernel_size, stride,
              padding, dilation, groups, deformable_groups):  # fmt: skip
        from torchvision.ops import deform_conv2d

        return deform_conv2d(data, offset, weight, bias, stride=stride, padding=padding,
                             dilation=dilation)  # fmt: skip


def import_official(source: Path) -> types.SimpleNamespace:
    """The official modules the comparisons use, with the stubs and shims above."""
    # This file is named like the official package: its folder must not shadow it.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    sys.path.insert(0, str(source))
    collections.Sequence = collections.abc.Sequence
    try:
        import easydict  # noqa: F401
    except ImportError:
        sys.modules["easydict"] = types.SimpleNamespace(EasyDict=_EasyDict)
    for name in (
        "upsnet.bbox.bbox", "upsnet.nms.cpu_nms", "upsnet.nms.gpu_nms", "upsnet.rpn.anchors",
        "upsnet.operators._ext.deform_conv", "upsnet.operators._ext.mod_deform_conv",
        "upsnet.operators._ext.roi_align",
    ):  # fmt: skip
        sys.modules[name] = _CompiledExtension(name)
    from upsnet.config.config import config

    config.train.use_horovod = False
    config.dataset.num_classes = NUM_THINGS + 1
    config.dataset.num_seg_classes = NUM_STUFF + NUM_THINGS
    config.network.mask_size = MASK_SIZE

    import upsnet.nms.nms as nms
    from upsnet.dataset.base_dataset import BaseDataset
    from upsnet.models import fcn, fpn, rcnn, resnet
    from upsnet.operators.modules import deform_conv, mask_matching, mask_removal, mask_roi
    from upsnet.operators.modules import unary_logits

    deform_conv.DeformConvFunction = _TorchvisionDeformConv
    # GPU NMS -> the official NumPy NMS (same +1 box convention).
    mask_roi.gpu_nms_wrapper = lambda thresh, device_id: nms.py_nms_wrapper(thresh)
    return types.SimpleNamespace(
        config=config, fpn=fpn, fcn=fcn, rcnn=rcnn, resnet=resnet, dataset=BaseDataset,
        mask_matching=mask_matching, mask_removal=mask_removal, mask_roi=mask_roi,
        unary_logits=unary_logits,
    )  # fmt: skip


def official_network(official, variant: str, generator: torch.Generator) -> dict:
    _, with_gap, layers = NETWORK_VARIANTS[variant]
    official.config.network.fpn_with_gap = with_gap
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
    num_classes = NUM_THINGS + 1
    with _cpu_only_calls():
        fpn = official.fpn.FPN(feature_dim=FPN_DIM)
        fcn_head = official.fcn.FCNHead(FPN_DIM, NUM_STUFF + NUM_THINGS, num_layers=layers)
        rcnn = official.rcnn.RCNN(num_classes, num_classes, dim_in=FPN_DIM, dim_hidden=BOX_FC_DIM)
        mask_branch = official.rcnn.MaskBranch(
            num_classes, dim_in=FPN_DIM, dim_hidden=MASK_CONV_DIM
        )
    modules = {"fpn": fpn, "fcn_head": fcn_head, "rcnn": rcnn, "mask_branch": mask_branch}
    with torch.no_grad():
        # Zero-initialized officially; random here so that the offsets and biases matter.
        for name, parameter in fcn_head.named_parameters():
            if "conv_offset" in name or name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
        for module in (fpn, rcnn, mask_branch):
            for name, parameter in module.named_parameters():
                if name.endswith("bias"):
                    parameter.normal_(0.0, 0.1)
    state = {f"{prefix}.{k}": v.detach().clone() for prefix, m in modules.items()
             for k, v in m.state_dict().items()}  # fmt: skip
    image_size = (32, 64)  # res2 at stride 4 ... res5 at stride 32
    inputs = {
        "res": [torch.randn(1, c, image_size[0] // s, image_size[1] // s, generator=generator)
                for c, s in ((256, 4), (512, 8), (1024, 16), (2048, 32))],  # fmt: skip
        "p": [torch.randn(1, FPN_DIM, image_size[0] // s, image_size[1] // s, generator=generator)
              for s in (4, 8, 16, 32)],  # fmt: skip
        "box_pooled": torch.randn(5, FPN_DIM, 7, 7, generator=generator),
        "mask_pooled": torch.randn(5, FPN_DIM, 14, 14, generator=generator),
    }
    rcnn.roi_pooling = _GivenFeatures(inputs["box_pooled"])
    mask_branch.roi_pooling = _GivenFeatures(inputs["mask_pooled"])
    with torch.no_grad():
        outputs = {
            "fpn": list(fpn(*inputs["res"])),
            "semantic": fcn_head(*inputs["p"])["fcn_score"],
            "masks": mask_branch(None, None),
        }
        box = rcnn(None, None)
    outputs.update(box_scores=box["cls_score"], box_deltas=box["bbox_pred"])
    return {"official_state": state, "inputs": inputs, "official": outputs}


def _semantic_scene(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """Semantic logits with stuff bands, thing blobs and noise, so every rule is exercised."""
    logits = torch.randn(1, NUM_STUFF + NUM_THINGS, height, width, generator=generator)
    band = height // NUM_STUFF
    for s in range(NUM_STUFF):
        logits[0, s, s * band : (s + 1) * band] += 3.0
    return logits


def official_train_logits(official, generator: torch.Generator) -> dict:
    height, width = 20, 28
    semantic = _semantic_scene(generator, height, width)
    # Ground-truth boxes at the input resolution (detectron2's corners), real-valued so that the
    # official rounding matters; the official box is the same with the far corner 1 less.
    boxes = torch.tensor([[9.0, 3.5, 37.0, 29.0], [21.3, 17.8, 66.6, 58.1], [0.0, 42.0, 25.0, 80.0],
                          [81.9, 9.2, 112.0, 47.5], [48.5, 50.5, 53.5, 54.5]])  # fmt: skip
    classes = torch.tensor([0, 2, 3, 1, 2])
    mask_logits = torch.randn(len(boxes), MASK_SIZE, MASK_SIZE, generator=generator) * 3
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes - torch.tensor([0.0, 0.0, 1.0, 1.0])], 1)
    seg_term = official.unary_logits.SegTerm(NUM_STUFF + NUM_THINGS)
    mask_term = official.unary_logits.MaskTerm(NUM_STUFF + NUM_THINGS, box_scale=1 / 4.0)
    seg_logits, seg_inst_logits = seg_term(classes + 1, semantic, rois)
    mask = mask_term(mask_logits[:, None], rois, classes + 1, semantic)
    # The official training forward's Z (resnet_upsnet.py, enable_void).
    void = (
        semantic[:, NUM_STUFF:].max(dim=1, keepdim=True)[0]
        - seg_inst_logits.max(dim=1, keepdim=True)[0]
    )
    z = torch.cat([seg_logits, seg_inst_logits + mask, void], dim=1)
    inputs = {"semantic": semantic, "boxes": boxes, "classes": classes, "mask_logits": mask_logits}
    return {"inputs": inputs, "official": z}


def official_targets(official, generator: torch.Generator) -> dict:
    height, width = 75, 90  # not multiples of 4 or 32: padding and rounding matter
    semantic = torch.randint(NUM_STUFF, (height, width), generator=generator)
    semantic[torch.rand(height, width, generator=generator) < 0.05] = IGNORE
    masks = torch.zeros(5, height, width, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(
        [(3, 5, 30, 40), (20, 30, 60, 70), (50, 2, 74, 30), (10, 60, 40, 89), (62, 50, 75, 90)]
    ):
        masks[i, y0:y1, x0:x1] = True
    for i, mask in enumerate(masks):
        semantic[mask] = NUM_STUFF + i % NUM_THINGS
    semantic[0:6, 80:90] = NUM_STUFF + 1  # a crowd region: thing pixels of no instance
    keep = torch.tensor([3, 0, 4])

    def quarter(maps: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(official.dataset.gt_list_to_blob(None, [maps], scale=1 / 4.0))

    semantic_4x = quarter(semantic.numpy()[None].astype(np.int64))
    masks_4x = quarter(masks.numpy().astype(np.int64))
    matching = official.mask_matching.MaskMatching
    with_unknown = matching(NUM_STUFF + NUM_THINGS, enable_void=True)(
        semantic_4x, masks_4x, keep_inds=keep.numpy()
    )
    without = matching(NUM_STUFF + NUM_THINGS, enable_void=False)(semantic_4x, masks_4x)
    inputs = {"semantic": semantic, "masks": masks, "keep": keep}
    return {"inputs": inputs, "with_unknown": with_unknown, "without_unknown": without}


def official_losses(official, generator: torch.Generator) -> dict:
    channels = NUM_STUFF + NUM_THINGS + 3
    panoptic_logits_ = torch.randn(1, channels, 12, 16, generator=generator)
    panoptic_target_ = torch.randint(channels, (1, 12, 16), generator=generator)
    panoptic_target_[:, :, 12:] = IGNORE  # padding
    panoptic_target_[:, 2:4] = IGNORE  # void
    roi_logits = torch.randn(4, NUM_STUFF + NUM_THINGS, MASK_SIZE, MASK_SIZE, generator=generator)
    roi_target = torch.randint(
        NUM_STUFF + NUM_THINGS, (4, MASK_SIZE, MASK_SIZE), generator=generator
    )
    roi_target[:, :5] = IGNORE
    # The losses as the official model builds them (resnet_upsnet.py): mean over all pixels.
    losses = {
        "panoptic": torch.nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="none")(
            panoptic_logits_, panoptic_target_
        ).mean(),
        "roi": torch.nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="none")(
            roi_logits, roi_target
        ).mean(),
    }
    # The RoI ground truth as the official dataset builds it (coco.py, inline there): box
    # corners rounded (NumPy, half to even), an empty side widened, OpenCV nearest to 28 x 28.
    import cv2

    roi_semantic = torch.randint(NUM_STUFF + NUM_THINGS, (61, 77), generator=generator)
    roi_boxes = torch.tensor([[3.0, 4.0, 40.5, 30.2], [10.5, 0.0, 76.0, 60.0],
                              [20.0, 20.0, 20.4, 35.0], [7.2, 9.9, 14.6, 12.5]])  # fmt: skip
    targets = []
    for box in np.around(roi_boxes.numpy()).astype(np.int32):
        if box[3] == box[1]:
            box[3] += 1
        if box[2] == box[0]:
            box[2] += 1
        crop = roi_semantic.numpy()[box[1] : box[3], box[0] : box[2]].astype(np.uint8)
        targets.append(cv2.resize(crop, (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_NEAREST))
    losses["roi_target"] = torch.from_numpy(np.stack(targets)).long()
    inputs = {
        "panoptic_logits": panoptic_logits_, "panoptic_target": panoptic_target_,
        "roi_logits": roi_logits, "roi_target": roi_target,
        "roi_semantic": roi_semantic, "roi_boxes": roi_boxes,
    }  # fmt: skip
    return {"inputs": inputs, "official": losses}


def official_candidates(official, generator: torch.Generator) -> dict:
    height, width = 90, 120
    count = 40
    corners = torch.randint(0, 80, (count, 2), generator=generator).float()
    sizes = torch.randint(6, 50, (count, 2), generator=generator).float()
    rois = torch.cat([corners[:, :1], corners[:, 1:], corners[:, :1] + sizes[:, :1],
                      corners[:, 1:] + sizes[:, 1:]], dim=1)  # fmt: skip
    rois[0] = torch.tensor([-5.0, 3.0, 130.0, 95.0])  # clipped to the image
    # Peaked class probabilities, so that many (proposal, class) pairs pass 0.6 or come close.
    logits = torch.randn(count, NUM_THINGS + 1, generator=generator) * 3
    probabilities = F.softmax(logits, dim=1)
    max_candidates = 8
    official.config.test.max_det = max_candidates
    mask_roi = official.mask_roi.MaskROI(
        clip_boxes=True, bbox_class_agnostic=False, top_n=max_candidates,
        num_classes=NUM_THINGS + 1, nms_thresh=0.5, class_agnostic=True, score_thresh=0.6,
    )  # fmt: skip
    bottom_rois = torch.cat([torch.zeros(count, 1), rois], dim=1)
    deltas = torch.zeros(count, 4 * (NUM_THINGS + 1))  # boxes = the proposals
    im_info = np.array([[height, width, 1.0]], dtype=np.float32)
    with _cpu_only_calls():
        scores, boxes, classes = mask_roi(bottom_rois, deltas, probabilities, im_info)
    inputs = {
        "rois": rois, "class_probabilities": probabilities,
        "image_size": torch.tensor([height, width]), "max_candidates": torch.tensor(max_candidates),
    }  # fmt: skip
    official_output = {"boxes": boxes[:, 1:], "scores": scores, "classes": classes - 1}
    return {"inputs": inputs, "official": official_output}


def _official_panoptic_result(
    official, semantic, image_size, scale, boxes, scores, classes, mask_logits, stuff_area_limit
):
    """
    The official inference from the panoptic candidates (boxes with the inclusive far corner,
    classes 0..T-1 or -1 for MaskROI's placeholder) on: resnet_upsnet.py's forward (test
    branch), upsnet_end2end_test.py's resizing by 1 / ``scale`` and get_unified_pan_result.
    """
    height, width = image_size
    with _cpu_only_calls():
        keep, mask_energy = official.mask_removal.MaskRemoval(fraction_threshold=0.3)(
            boxes, scores, mask_logits[:, None], classes + 1, semantic.shape[2:]
        )
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)[keep]
    kept_classes = (classes + 1)[keep]
    seg_term = official.unary_logits.SegTerm(NUM_STUFF + NUM_THINGS)
    seg_logits, seg_inst_logits = seg_term(kept_classes, semantic, rois * 4.0)
    void = (
        semantic[:, NUM_STUFF:].max(dim=1, keepdim=True)[0]
        - seg_inst_logits.max(dim=1, keepdim=True)[0]
    )
    z = torch.cat([seg_logits, seg_inst_logits + mask_energy, void], dim=1)
    panoptic = z.max(dim=1)[1]
    panoptic[panoptic == z.shape[1] - 1] = IGNORE
    import cv2

    def to_original(labels: torch.Tensor) -> np.ndarray:
        cropped = labels.numpy().squeeze(0).astype("uint8")[:height, :width]
        return cv2.resize(cropped, None, None, fx=1 / scale, fy=1 / scale,
                          interpolation=cv2.INTER_NEAREST)  # fmt: skip

    pan = to_original(panoptic)
    seg = to_original(semantic.max(dim=1)[1])
    pan_2ch = official.dataset.get_unified_pan_result(
        None, [seg], [pan], [kept_classes.numpy()], stuff_area_limit=stuff_area_limit
    )[0]
    result = torch.from_numpy(pan_2ch[:, :, :2].copy())  # uint8, as officially
    # The all-zero channel's pixels keep an instance id with a stuff category officially
    # (a second segment of it); categories compare, stuff carries no instance id.
    result[..., 1][result[..., 0] < NUM_STUFF] = 0
    return result


def official_panoptic(official, generator: torch.Generator, kind: str) -> dict:
    """The final panoptic result: with candidates, with none (MaskROI's placeholder and the
    all-zero channel) and with only empty masks."""
    image_size, scale = (52, 70), 0.5  # network input; the original image is twice as large
    padded = (64, 96)
    semantic = _semantic_scene(generator, *padded)
    semantic[0, NUM_STUFF + 1, 30:50, 5:40] += 4.0  # a thing the semantic head sees
    # Candidate boxes as the box head regresses them: real-valued, detectron2's corners.
    boxes = torch.tensor([[4.3, 30.5, 40.2, 50.0], [20.0, 2.6, 61.4, 25.5], [22.7, 5.1, 58.5, 24.9],
                          [45.5, 28.2, 70.0, 52.0], [0.0, 0.0, 15.8, 12.5]])  # fmt: skip
    scores = torch.tensor([0.95, 0.9, 0.85, 0.8, 0.7])
    classes = torch.tensor([1, 2, 2, 0, 3])
    mask_logits = torch.randn(len(boxes), MASK_SIZE, MASK_SIZE, generator=generator) + 1.0
    if kind == "empty_masks":
        mask_logits = -mask_logits.abs() - 0.1
    official_inputs = (boxes - torch.tensor([0.0, 0.0, 1.0, 1.0]), scores, classes, mask_logits)
    if kind == "no_candidates":  # MaskROI's output when nothing passes, the project's empty
        official_inputs = (torch.zeros(1, 4), torch.ones(1), torch.full((1,), -1), mask_logits[:1])
        boxes, scores, classes = torch.zeros(0, 4), torch.zeros(0), classes[:0]
        mask_logits = mask_logits[:0]
    stuff_area_limit = 1500  # at the original size: 4x the input-size pixels
    result = _official_panoptic_result(
        official, semantic, image_size, scale, *official_inputs, stuff_area_limit
    )
    inputs = {
        "semantic": semantic, "image_size": torch.tensor(image_size),
        "output_size": torch.tensor(result.shape[:2]),
        "stuff_area_limit": torch.tensor(stuff_area_limit),
        "boxes": boxes, "scores": scores, "classes": classes, "mask_logits": mask_logits,
    }  # fmt: skip
    return {"inputs": inputs, "official": result}


def compare_resnet(official, network_state: dict, generator: torch.Generator) -> list:
    """
    The official ResNet-50 (random weights and frozen-BN statistics) against the converted
    project backbone's bottom-up part on one image: printed by the tool only (its weights are
    too large for a golden file).
    """
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
    resnet = official.resnet.ResNetBackbone([3, 4, 6, 3]).eval()
    with torch.no_grad():
        for name, buffer in resnet.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                buffer.normal_(0.0, 0.1)
            elif name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight")):
                buffer.uniform_(0.5, 1.5)
    state = {f"resnet_backbone.{k}": v for k, v in resnet.state_dict().items()}
    model = project_model("coco", {**state, **network_state}, bottom_up_given=True)
    image = torch.randn(1, 3, 64, 96, generator=generator)
    with torch.no_grad():
        expected = resnet(image)
        actual = model.backbone.bottom_up(image)
    results = []
    for level, out in zip(range(2, 6), expected):
        error = close(out, actual[f"res{level}"])
        results.append((f"network/coco/resnet res{level} (tool only)",
                        error <= RELATIVE_TOLERANCE, f"max relative difference {error:.2e}"))  # fmt: skip
    return results


def build_golden(source: Path) -> dict:
    official = import_official(source)
    generator = torch.Generator().manual_seed(20)
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "official_repository": "uber-research/UPSNet",
        "official_commit": commit,
        "network": {v: official_network(official, v, generator) for v in NETWORK_VARIANTS},
        "train_logits": official_train_logits(official, generator),
        "targets": official_targets(official, generator),
        "losses": official_losses(official, generator),
        "candidates": official_candidates(official, generator),
        "panoptic": {
            kind: official_panoptic(official, generator, kind)
            for kind in ("candidates", "no_candidates", "empty_masks")
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", required=True, type=Path,
                        help="a clone of uber-research/UPSNet")  # fmt: skip
    parser.add_argument("--output", type=Path, default=GOLDEN, help="golden file to write")
    args = parser.parse_args(argv)
    if not (args.official_src / "upsnet" / "models" / "resnet_upsnet.py").is_file():
        parser.error(f"--official-src {args.official_src}: no upsnet/models/resnet_upsnet.py")
    golden = build_golden(args.official_src)
    official = import_official(args.official_src)
    results = compare(golden)
    results += compare_resnet(
        official, golden["network"]["coco"]["official_state"], torch.Generator().manual_seed(5)
    )
    for name, passed, measured in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {measured}")
    print(f"official commit {golden['official_commit']}")
    if not all(passed for _, passed, _ in results):
        print("not written: some comparisons fail", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(golden, args.output)
    print(f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}"
          f" ({args.output.stat().st_size / 2**20:.1f} MiB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
