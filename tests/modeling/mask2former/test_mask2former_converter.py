"""The official-checkpoint converter: licence warning, class order, input notes, clear errors.
(Exactness on outputs: test_mask2former_official_golden.py.)"""

from __future__ import annotations

import pytest
import torch

from panoptic_zoo.model_zoo.converters import (
    ConversionError,
    convert_official_mask2former,
    mask2former_input_notes,
)
from panoptic_zoo.model_zoo.converters.mask2former import (
    LICENSE_WARNING,
    OFFICIAL_PIXEL_MEAN,
    OFFICIAL_PIXEL_STD,
)

HEAD = "sem_seg_head."


def _official(classes: int = 4) -> dict[str, torch.Tensor]:
    return {
        "backbone.stem.conv1.weight": torch.zeros(1),
        f"{HEAD}pixel_decoder.mask_features.weight": torch.zeros(1),
        f"{HEAD}pixel_decoder.adapter_1.weight": torch.zeros(1),
        f"{HEAD}pixel_decoder.adapter_2.weight": torch.ones(1),
        f"{HEAD}pixel_decoder.layer_2.norm.bias": torch.ones(1),
        f"{HEAD}pixel_decoder.transformer.level_embed": torch.zeros(1),
        f"{HEAD}pixel_decoder.transformer.encoder.layers.3.self_attn.value_proj.weight": torch.zeros(1),
        f"{HEAD}predictor.transformer_cross_attention_layers.2.multihead_attn.in_proj_weight": torch.zeros(1),
        f"{HEAD}predictor.transformer_self_attention_layers.2.norm.weight": torch.zeros(1),
        f"{HEAD}predictor.transformer_ffn_layers.8.linear1.bias": torch.zeros(1),
        f"{HEAD}predictor.class_embed.weight": torch.arange(classes + 1.0)[:, None].repeat(1, 2),
        f"{HEAD}predictor.class_embed.bias": torch.arange(classes + 1.0),
        "criterion.empty_weight": torch.ones(classes + 1),
    }  # fmt: skip


def test_keys_renamed_and_licence_warned():
    with pytest.warns(UserWarning, match="CC BY-NC"):
        conversion = convert_official_mask2former(_official())
    converted = conversion.state_dict
    assert conversion.unused == ["criterion.empty_weight"]
    # Official adapters count from the finest level (adapter_1 = res2), ours from the coarsest.
    assert torch.equal(converted["head.pixel_decoder.lateral_convs.0.weight"], torch.ones(1))
    assert torch.equal(converted["head.pixel_decoder.lateral_convs.1.weight"], torch.zeros(1))
    assert "head.pixel_decoder.output_convs.0.norm.bias" in converted
    assert "head.pixel_decoder.encoder.3.self_attn.value_proj.weight" in converted
    assert "head.pixel_decoder.level_embed" in converted
    assert "head.predictor.cross_attention.2.attention.in_proj_weight" in converted
    assert "head.predictor.self_attention.2.norm.weight" in converted
    assert "head.predictor.ffn.8.linear1.bias" in converted
    assert "backbone.stem.conv1.weight" in converted
    assert "CC BY-NC" in LICENSE_WARNING


def test_class_order_permutes_the_classes_and_keeps_no_object_last():
    with pytest.warns(UserWarning):
        converted = convert_official_mask2former(_official(), class_order=[2, 0, 3, 1]).state_dict
    assert converted["head.predictor.class_embed.bias"].tolist() == [2, 0, 3, 1, 4]
    assert converted["head.predictor.class_embed.weight"][:, 0].tolist() == [2, 0, 3, 1, 4]


def test_bad_class_order_and_foreign_checkpoint_are_refused():
    with pytest.warns(UserWarning), pytest.raises(ConversionError, match="permutation"):
        convert_official_mask2former(_official(), class_order=[0, 1, 1, 2])
    with pytest.raises(ConversionError, match="not an official Mask2Former checkpoint"):
        convert_official_mask2former({"backbone.x": torch.zeros(1)})


def test_input_notes():
    assert mask2former_input_notes(list(OFFICIAL_PIXEL_MEAN), list(OFFICIAL_PIXEL_STD), "RGB") == []
    notes = mask2former_input_notes([103.53, 116.28, 123.675], [1.0, 1.0, 1.0], "BGR")
    assert len(notes) == 2 and "'RGB'" in notes[0] and "PIXEL_MEAN" in notes[1]
