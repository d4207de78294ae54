"""
Official UPSNet checkpoints (uber-research/UPSNet, ``resnet_upsnet``) to this project's
``UPSNet``: detectron2's ResNet-FPN, RPN and ROI heads plus :class:`UPSNetSemanticHead`.

Key mapping: docs/MODEL_ZOO.md. Detectron's background class comes first in the box
classifier, box regressor and mask predictor; detectron2's classifier puts it last and its
regressor and mask predictor have none, so those rows are rotated or dropped.

Both number COCO's semantic classes the same way (53 stuff then 80 things, by category id), as
do their Cityscapes setups (11 stuff then 8 things, by trainId). The FPN's global-pooling branch
(``fpn.fpn_gap``, official ``fpn_with_gap``) becomes ``fpn_lateral5.global_pooling``
(``MODEL.UPSNET.FPN_GLOBAL_POOLING``). Not carried over, reported in :attr:`Conversion.unused` /
``notes``: a norm inside ``rcnn.fc6`` (``rcnn_with_norm``) and semantic-conv biases followed by
a norm (this head has no bias where it normalizes); the released COCO and Cityscapes models use
neither, so they convert exactly (tools/parity/upsnet.py checks the converted layers' outputs).
Detections of the converted model are close to, not equal to, the official ones: detectron2
drops Detectron's "+1" box convention and places anchors differently.
"""

from __future__ import annotations

import re

import torch

from .common import Conversion, ConversionError, RenameRule, renamer

__all__ = ["convert_official_upsnet"]


def _conv_norm(source: str, target: str) -> list[RenameRule]:
    """A conv that is ``nn.Sequential(conv, norm)`` with a norm, a bare conv without one."""
    return [
        RenameRule(rf"{source}\.0\.(weight|bias)", rf"{target}.\1"),
        RenameRule(rf"{source}\.1\.(weight|bias|running_mean|running_var)", rf"{target}.norm.\1"),
        RenameRule(rf"{source}\.(weight|bias)", rf"{target}.\1"),
    ]


def _semantic_head_rules(weights: dict[str, torch.Tensor]) -> list[RenameRule]:
    subnet = r"fcn_head\.fcn_subnet\.conv"
    layers = sorted({int(m.group(1)) for k in weights if (m := re.match(subnet + r"\.(\d+)\.", k))})
    rules = []
    for i in layers:
        conv, norm = f"semantic_head.subnetwork.{3 * i}", f"semantic_head.subnetwork.{3 * i + 1}"
        normalized = f"fcn_head.fcn_subnet.conv.{i}.1.weight" in weights
        rules += [
            RenameRule(rf"{subnet}\.{i}\.0\.conv_offset\.(weight|bias)", rf"{conv}.offset.\1"),
            RenameRule(rf"{subnet}\.{i}\.0\.conv\.weight", f"{conv}.weight"),
            # Before a norm the bias cannot be folded anywhere: this head has none there.
            RenameRule(rf"{subnet}\.{i}\.0\.conv\.bias", "" if normalized else f"{conv}.bias"),
            RenameRule(rf"{subnet}\.{i}\.1\.(weight|bias)", rf"{norm}.\1"),
        ]
    return rules + [RenameRule(r"fcn_head\.score\.(weight|bias)", r"semantic_head.predictor.\1")]


def _rules(weights: dict[str, torch.Tensor]) -> list[RenameRule]:
    bottom_up = "backbone.bottom_up"
    block = r"resnet_backbone\.res(\d)\.layers\.(\d+)"
    rules = [
        RenameRule(r".*\.num_batches_tracked", ""),
        RenameRule(r"resnet_backbone\.conv1\.conv1\.weight", f"{bottom_up}.stem.conv1.weight"),
        RenameRule(r"resnet_backbone\.conv1\.bn1\.(.*)", rf"{bottom_up}.stem.conv1.norm.\1"),
        RenameRule(rf"{block}\.conv(\d)\.weight", rf"{bottom_up}.res\1.\2.conv\3.weight"),
        RenameRule(rf"{block}\.bn(\d)\.(.*)", rf"{bottom_up}.res\1.\2.conv\3.norm.\4"),
        RenameRule(rf"{block}\.conv2_offset\.(.*)", rf"{bottom_up}.res\1.\2.conv2_offset.\3"),
        RenameRule(rf"{block}\.downsample\.0\.weight", rf"{bottom_up}.res\1.\2.shortcut.weight"),
        RenameRule(rf"{block}\.downsample\.1\.(.*)", rf"{bottom_up}.res\1.\2.shortcut.norm.\3"),
    ]
    rules.append(
        RenameRule(r"fpn\.fpn_gap\.(weight|bias)", r"backbone.fpn_lateral5.global_pooling.\1")
    )
    for k in (2, 3, 4, 5):
        rules += _conv_norm(rf"fpn\.fpn_p{k}_1x1", f"backbone.fpn_lateral{k}")
        rules += _conv_norm(rf"fpn\.fpn_p{k}", f"backbone.fpn_output{k}")
    rpn = "proposal_generator.rpn_head"
    rules += [
        RenameRule(r"rpn\.conv_proposal\.0\.(weight|bias)", rf"{rpn}.conv.\1"),
        RenameRule(r"rpn\.cls_score\.(weight|bias)", rf"{rpn}.objectness_logits.\1"),
        RenameRule(r"rpn\.bbox_pred\.(weight|bias)", rf"{rpn}.anchor_deltas.\1"),
        RenameRule(r"rcnn\.fc6\.0\.(weight|bias)", r"roi_heads.box_head.fc1.\1"),
        RenameRule(r"rcnn\.fc7\.0\.(weight|bias)", r"roi_heads.box_head.fc2.\1"),
        RenameRule(r"rcnn\.cls_score\.(weight|bias)", r"roi_heads.box_predictor.cls_score.\1"),
        RenameRule(r"rcnn\.bbox_pred\.(weight|bias)", r"roi_heads.box_predictor.bbox_pred.\1"),
        RenameRule(
            r"mask_branch\.mask_deconv1\.0\.(weight|bias)", r"roi_heads.mask_head.deconv.\1"
        ),
        RenameRule(r"mask_branch\.mask_score\.(weight|bias)", r"roi_heads.mask_head.predictor.\1"),
    ]
    for k in (1, 2, 3, 4):
        rules += _conv_norm(rf"mask_branch\.mask_conv{k}", f"roi_heads.mask_head.mask_fcn{k}")
    return rules + _semantic_head_rules(weights)


def convert_official_upsnet(weights: dict[str, torch.Tensor]) -> Conversion:
    required = ("rcnn.cls_score.weight", "mask_branch.mask_score.weight", "fcn_head.score.weight")
    missing = [k for k in required if k not in weights]
    if missing:
        raise ConversionError(f"not an official UPSNet checkpoint: no {missing}")
    target_of = renamer(_rules(weights))
    conversion = Conversion({})
    for source, value in weights.items():
        target = target_of(source)
        if target is None:
            if not source.endswith("num_batches_tracked"):
                conversion.unused.append(source)
            continue
        if source.startswith("rcnn.cls_score."):
            value = torch.cat([value[1:], value[:1]])  # background: first -> last
        elif source.startswith("rcnn.bbox_pred."):
            value = value[4:]  # the background class's 4 deltas
        elif source.startswith("mask_branch.mask_score."):
            value = value[1:]  # the background mask
        conversion.state_dict[target] = value
    if any(k.startswith("rcnn.fc6.") for k in conversion.unused):
        conversion.notes.append("the box head's norm after fc6 (rcnn_with_norm) is dropped")
    if any(
        re.match(r"fcn_head\.fcn_subnet\.conv\.\d+\.0\.conv\.bias", k) for k in conversion.unused
    ):
        conversion.notes.append("semantic conv biases before a norm are dropped")
    return conversion
