"""
Official Mask2Former checkpoints (facebookresearch/Mask2Former, a detectron2 project) to this
project's ``Mask2Former``: a rename (the modules match one to one), exact on outputs
(tools/parity/mask2former.py, tests/modeling/mask2former/test_mask2former_official_golden.py).

The official weights are released under CC BY-NC 4.0 (non-commercial): :data:`LICENSE_WARNING`
is issued on every conversion, and a converted checkpoint carries that licence.

The official models take RGB input normalized by the ImageNet statistics (their configs'
INPUT.FORMAT, MODEL.PIXEL_MEAN and PIXEL_STD; :func:`mask2former_input_notes`). Their classes are
the dataset's contiguous ids; for a dataset whose contiguous ids are not things-then-stuff
(Cityscapes), pass ``class_order`` (:func:`~.detectron2.unified_class_order`).
"""

from __future__ import annotations

import re
import warnings

import torch

from .common import Conversion, ConversionError, RenameRule, input_notes, rename_keys

__all__ = [
    "LICENSE_WARNING",
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "convert_official_mask2former",
    "mask2former_input_notes",
]

LICENSE_WARNING = (
    "the official Mask2Former weights are licensed CC BY-NC 4.0 (non-commercial use only); the "
    "converted checkpoint is under the same licence"
)
OFFICIAL_PIXEL_MEAN = (123.675, 116.28, 103.53)
OFFICIAL_PIXEL_STD = (58.395, 57.12, 57.375)

_HEAD = r"sem_seg_head\."
_RULES = [
    RenameRule(r"backbone\..*", r"\g<0>"),
    RenameRule(rf"{_HEAD}pixel_decoder\.input_proj\.(.*)", r"head.pixel_decoder.input_proj.\1"),
    RenameRule(rf"{_HEAD}pixel_decoder\.transformer\.level_embed", r"head.pixel_decoder.level_embed"),
    RenameRule(rf"{_HEAD}pixel_decoder\.transformer\.encoder\.layers\.(.*)",
               r"head.pixel_decoder.encoder.\1"),
    RenameRule(rf"{_HEAD}pixel_decoder\.mask_features\.(.*)", r"head.pixel_decoder.mask_features.\1"),
    # Laterals: official adapter_k / layer_k count from the finest level; here from the coarsest
    # (<k> is turned into the index by _lateral_index).
    RenameRule(rf"{_HEAD}pixel_decoder\.adapter_(\d+)\.(.*)", r"head.pixel_decoder.lateral_convs.<\1>.\2"),
    RenameRule(rf"{_HEAD}pixel_decoder\.layer_(\d+)\.(.*)", r"head.pixel_decoder.output_convs.<\1>.\2"),
    RenameRule(rf"{_HEAD}predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.(.*)",
               r"head.predictor.self_attention.\1.attention.\2"),
    RenameRule(rf"{_HEAD}predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(.*)",
               r"head.predictor.self_attention.\1.norm.\2"),
    RenameRule(rf"{_HEAD}predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.*)",
               r"head.predictor.cross_attention.\1.attention.\2"),
    RenameRule(rf"{_HEAD}predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(.*)",
               r"head.predictor.cross_attention.\1.norm.\2"),
    RenameRule(rf"{_HEAD}predictor\.transformer_ffn_layers\.(.*)", r"head.predictor.ffn.\1"),
    RenameRule(rf"{_HEAD}predictor\.((decoder_norm|query_feat|query_embed|level_embed|input_proj|"
               r"class_embed|mask_embed)\..*)", r"head.predictor.\1"),
    # The loss's class weights: set by the config (MODEL.MASK2FORMER.LOSS.NO_OBJECT_WEIGHT).
    RenameRule(r"criterion\.empty_weight", ""),
]  # fmt: skip


def convert_official_mask2former(
    weights: dict[str, torch.Tensor], class_order: list[int] | None = None
) -> Conversion:
    """
    ``weights`` of an official checkpoint (its ``model`` dict); ``class_order``: for each class
    of this project (things, then stuff), the official class index (None: the same order). The
    "no object" logit stays last. Warns with :data:`LICENSE_WARNING`.
    """
    required = ("sem_seg_head.predictor.class_embed.weight",
                "sem_seg_head.pixel_decoder.mask_features.weight")  # fmt: skip
    missing = [k for k in required if k not in weights]
    if missing:
        raise ConversionError(f"not an official Mask2Former checkpoint: no {missing}")
    warnings.warn(LICENSE_WARNING, stacklevel=2)
    laterals = sorted({int(m.group(1)) for k in weights
                       if (m := re.search(r"pixel_decoder\.adapter_(\d+)\.", k))})  # fmt: skip
    conversion = rename_keys(weights, _RULES)
    conversion.state_dict = {
        re.sub(r"<(\d+)>", lambda m: str(len(laterals) - int(m.group(1))), k): v
        for k, v in conversion.state_dict.items()
    }
    if class_order is not None:
        _reorder_classes(conversion.state_dict, class_order)
    return conversion


def _reorder_classes(state_dict: dict[str, torch.Tensor], class_order: list[int]) -> None:
    for name in ("head.predictor.class_embed.weight", "head.predictor.class_embed.bias"):
        tensor = state_dict[name]
        no_object = tensor.shape[0] - 1
        if sorted(class_order) != list(range(no_object)):
            raise ConversionError(
                f"class_order must be a permutation of the checkpoint's {no_object} classes, "
                f"got {len(class_order)} entries"
            )
        state_dict[name] = tensor[[*class_order, no_object]]


def mask2former_input_notes(
    pixel_mean: list[float], pixel_std: list[float], input_format: str
) -> list[str]:
    """Why a config would not feed a converted official model the input it was trained on
    (empty when it does)."""
    return input_notes(
        pixel_mean, pixel_std, input_format, OFFICIAL_PIXEL_MEAN, OFFICIAL_PIXEL_STD, "RGB"
    )
