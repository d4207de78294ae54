"""
Official Panoptic FCN checkpoints (dvlab-research / Jia-Research-Lab ``PanopticFCN``, a
detectron2 project) to this project's ``PanopticFCN``.

Key mapping and the official norms the target config needs: docs/MODEL_ZOO.md. The kernel
head's ``out_conv`` (3x3) and ``thing_generator.embed_extractor`` (1x1) are composed into
``kernel_generator.kernels``, exactly (nothing between them).

Not exact, and reported in :attr:`Conversion.notes` when present:

* ``stuff_generator.embed_extractor``: the official model projects stuff kernels with their own
  1x1 conv; here things and stuff share ``kernel_generator.kernels`` (the thing projection is
  used), so stuff masks differ.
* DCNv2 in the position head: the modulation mask (rows 18-26 of ``offset_mask_conv``) has no
  counterpart in this project's DCNv1 blocks.
* The official encoder's last conv is followed by ReLU; here it is linear.
"""

from __future__ import annotations

import re

import torch

from .common import Conversion, ConversionError, RenameRule, renamer

__all__ = ["convert_official_panoptic_fcn"]

OFFSET_CHANNELS = 18  # 2 x 3 x 3: (dy, dx) per tap, the first 18 of DCNv2's 27 outputs


def _tower_rules(source: str, target: str) -> list[RenameRule]:
    """
    Layer ``<k>`` (numbered from 1) of an official ``SingleHead`` -> layer k-1 of a conv tower
    here: plain detectron2 ``Conv2d`` keys are the same, a ``ModulatedDeformConvWithOff``'s
    ``offset_mask_conv`` / ``dcnv2`` become a ``DeformConvBlock``'s ``offset`` / ``conv`` + ``norm``.
    """
    layer = rf"{re.escape(source)}(\d+)"
    return [
        RenameRule(rf"{layer}\.offset_mask_conv\.(weight|bias)", rf"{target}.<\1>.offset.\2"),
        RenameRule(rf"{layer}\.dcnv2\.norm\.(.*)", rf"{target}.<\1>.norm.\2"),
        RenameRule(rf"{layer}\.dcnv2\.(weight|bias)", rf"{target}.<\1>.conv.\2"),
        RenameRule(rf"{layer}\.(weight|bias|norm\..*)", rf"{target}.<\1>.\2"),
    ]


def _rules(encoder_features: list[str], encoder_layers: int) -> list[RenameRule]:
    last = rf"feature_encoder\.encode_head\.encode_head_head_{encoder_layers}\."
    rules = [RenameRule(r"backbone\..*", r"\g<0>")]
    rules += [
        RenameRule(rf"semantic_fpn\.{feature}\.(.*)", rf"feature_encoder.scale_heads.{i}.\1")
        for i, feature in enumerate(encoder_features)
    ]
    rules += _tower_rules(
        "position_head.position_head.position_head_head_", "kernel_generator.position_tower"
    )
    rules += [
        RenameRule(r"position_head\.out_inst\.(.*)", r"kernel_generator.thing_scores.\1"),
        RenameRule(r"position_head\.out_sem\.(.*)", r"kernel_generator.stuff_scores.\1"),
    ]
    rules += _tower_rules(
        "kernel_head.kernel_head.kernel_head_head_", "kernel_generator.kernel_tower"
    )
    # The last encoder layer is this project's linear output conv (weights only; a DCNv2
    # offset branch or a norm of it has no counterpart and stays unused).
    rules += [
        RenameRule(rf"{last}(?:dcnv2\.)?(weight|bias)", r"feature_encoder.output.\1"),
        RenameRule(rf"{last}.*", ""),
    ]
    rules += _tower_rules("feature_encoder.encode_head.encode_head_head_", "feature_encoder.tower")
    return rules


def _zero_based(key: str) -> str:
    """Official towers number layers from 1; ``<k>`` marks the number to shift."""
    return re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) - 1), key)


# Composed into kernel_generator.kernels instead of renamed.
KERNEL_PROJECTION = (
    "kernel_head.out_conv.weight",
    "kernel_head.out_conv.bias",
    "thing_generator.embed_extractor.weight",
    "thing_generator.embed_extractor.bias",
)


def convert_official_panoptic_fcn(
    weights: dict[str, torch.Tensor], encoder_features: tuple[str, ...] = ("p2", "p3", "p4", "p5")
) -> Conversion:
    """``weights`` of an official checkpoint; ``encoder_features``: official SEMANTIC_FPN.IN_FEATURES."""
    missing = [k for k in (*KERNEL_PROJECTION, "position_head.out_inst.weight") if k not in weights]
    if missing:
        raise ConversionError(f"not an official Panoptic FCN checkpoint: no {missing}")
    encoder_layers = [
        int(m.group(1))
        for k in weights
        if (m := re.match(r"feature_encoder\.encode_head\.encode_head_head_(\d+)\.", k))
    ]
    if not encoder_layers:
        raise ConversionError("no feature_encoder.encode_head layers in the checkpoint")
    target_of = renamer(_rules(list(encoder_features), max(encoder_layers)))
    last_layer = f"feature_encoder.encode_head.encode_head_head_{max(encoder_layers)}."
    conversion = Conversion({})
    for source, value in weights.items():
        if source in KERNEL_PROJECTION:
            continue
        target = target_of(source)
        if target is None:
            conversion.unused.append(source)
            continue
        if source.startswith(last_layer) and ".dcnv2." in source:
            _note(conversion, "the official encoder's last conv is deformable; here it is plain")
        if ".offset_mask_conv." in source:
            value = value[:OFFSET_CHANNELS]
            _note(conversion, "modulated deformable convs (DCNv2) become DCNv1: modulation dropped")
        conversion.state_dict[_zero_based(target)] = value
    _note(conversion, "the official encoder's last conv is followed by ReLU; here it is linear")

    out_w, out_b = weights["kernel_head.out_conv.weight"], weights["kernel_head.out_conv.bias"]
    embed_w = weights["thing_generator.embed_extractor.weight"].flatten(1)
    embed_b = weights["thing_generator.embed_extractor.bias"]
    kernels = "kernel_generator.kernels."
    conversion.state_dict[kernels + "weight"] = torch.einsum("em,mikl->eikl", embed_w, out_w)
    conversion.state_dict[kernels + "bias"] = embed_w @ out_b + embed_b
    if any(k.startswith("stuff_generator.") for k in conversion.unused):
        _note(
            conversion,
            "stuff kernels: the official separate stuff projection (stuff_generator) is dropped; "
            "here things and stuff share the thing projection",
        )
    return conversion


def _note(conversion: Conversion, note: str) -> None:
    if note not in conversion.notes:
        conversion.notes.append(note)
