"""
Official Panoptic FCN checkpoints (dvlab-research / Jia-Research-Lab ``PanopticFCN``, a
detectron2 project) to this project's ``PanopticFCN``: a rename, exact (the modules match
one to one; key mapping in docs/MODEL_ZOO.md). Checked on outputs: tools/parity/panoptic_fcn.py
and tests/modeling/panoptic_fcn/test_panoptic_fcn_official_golden.py.

The official models normalize detectron2's BGR input with RGB-ordered statistics (mean
123.675, 116.28, 103.53 on the B, G, R channels, std 1); a converted checkpoint computes the
official outputs only with those (:func:`official_input_notes`).
"""

from __future__ import annotations

import re

import torch

from .common import Conversion, ConversionError, RenameRule, input_notes, rename_keys

__all__ = ["OFFICIAL_PIXEL_MEAN", "OFFICIAL_PIXEL_STD", "convert_official_panoptic_fcn",
           "official_input_notes"]  # fmt: skip

# Every official config's MODEL.PIXEL_MEAN / PIXEL_STD, applied to INPUT.FORMAT "BGR".
OFFICIAL_PIXEL_MEAN = (123.675, 116.28, 103.53)
OFFICIAL_PIXEL_STD = (1.0, 1.0, 1.0)


def _tower_rules(source: str, target: str) -> list[RenameRule]:
    """
    Layer ``<k>`` (numbered from 1) of an official ``SingleHead`` -> layer k-1 of a conv tower
    here: plain detectron2 ``Conv2d`` keys are the same; a ``ModulatedDeformConvWithOff``'s
    ``offset_mask_conv`` / ``dcnv2`` become a ``DeformConvBlock``'s ``conv.offset`` / ``conv`` +
    ``norm`` (same channel layout: 18 offsets, then 9 modulation logits).
    """
    layer = rf"{re.escape(source)}(\d+)"
    return [
        RenameRule(rf"{layer}\.offset_mask_conv\.(weight|bias)", rf"{target}.<\1>.conv.offset.\2"),
        RenameRule(rf"{layer}\.dcnv2\.norm\.(.*)", rf"{target}.<\1>.norm.\2"),
        RenameRule(rf"{layer}\.dcnv2\.(weight|bias)", rf"{target}.<\1>.conv.\2"),
        RenameRule(rf"{layer}\.(weight|bias|norm\..*)", rf"{target}.<\1>.\2"),
    ]


def _rules(encoder_features: list[str]) -> list[RenameRule]:
    rules = [RenameRule(r"backbone\..*", r"\g<0>")]
    rules += [
        RenameRule(rf"semantic_fpn\.{feature}\.(.*)", rf"feature_encoder.scale_heads.{i}.\1")
        for i, feature in enumerate(encoder_features)
    ]
    rules += _tower_rules(
        "position_head.position_head.position_head_head_", "kernel_generator.position_tower"
    )
    rules += _tower_rules(
        "kernel_head.kernel_head.kernel_head_head_", "kernel_generator.kernel_tower"
    )
    rules += _tower_rules("feature_encoder.encode_head.encode_head_head_", "feature_encoder.tower")
    rules += [
        RenameRule(r"position_head\.out_inst\.(.*)", r"kernel_generator.thing_scores.\1"),
        RenameRule(r"position_head\.out_sem\.(.*)", r"kernel_generator.stuff_scores.\1"),
        RenameRule(r"kernel_head\.out_conv\.(.*)", r"kernel_generator.kernel_output.\1"),
        RenameRule(r"thing_generator\.embed_extractor\.(.*)", r"kernel_generator.thing_embed.\1"),
        RenameRule(r"stuff_generator\.embed_extractor\.(.*)", r"kernel_generator.stuff_embed.\1"),
    ]
    return rules


def _zero_based(key: str) -> str:
    """Official towers number layers from 1; ``<k>`` marks the number to shift."""
    return re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) - 1), key)


def convert_official_panoptic_fcn(
    weights: dict[str, torch.Tensor], encoder_features: tuple[str, ...] = ("p2", "p3", "p4", "p5")
) -> Conversion:
    """``weights`` of an official checkpoint; ``encoder_features``: official SEMANTIC_FPN.IN_FEATURES."""
    required = ("position_head.out_inst.weight", "kernel_head.out_conv.weight",
                "thing_generator.embed_extractor.weight")  # fmt: skip
    missing = [k for k in required if k not in weights]
    if missing:
        raise ConversionError(f"not an official Panoptic FCN checkpoint: no {missing}")
    conversion = rename_keys(weights, _rules(list(encoder_features)))
    conversion.state_dict = {_zero_based(k): v for k, v in conversion.state_dict.items()}
    return conversion


def official_input_notes(
    pixel_mean: list[float], pixel_std: list[float], input_format: str
) -> list[str]:
    """Why a config would not feed a converted official model the input it was trained on
    (empty when it does)."""
    return input_notes(
        pixel_mean, pixel_std, input_format, OFFICIAL_PIXEL_MEAN, OFFICIAL_PIXEL_STD, "BGR",
        " (RGB-ordered values on BGR input, as the official configs)",
    )
