"""UPSNet's semantic predictor computed level by level: the plain predictor's logits and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from panoptic_zoo.acceleration.level_sum import LevelSumPredictor, use_level_sum_predictor
from panoptic_zoo.modeling.upsnet.semantic_head import ConcatenatedLevelsPredictor


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_level_sum_predictor_is_the_convolution_of_the_resized_concatenation(memory_format):
    torch.manual_seed(0)
    predictor = LevelSumPredictor(in_channels=3, levels=3, out_channels=5)
    size = (13, 19)  # odd: the coarse levels are not exact halves
    levels = [
        torch.randn(2, 3, h, w).contiguous(memory_format=memory_format).requires_grad_()
        for h, w in [(13, 19), (7, 10), (4, 5)]
    ]
    # The definition: resize every level, concatenate, one 1x1 convolution.
    resized = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in levels]
    expected = F.conv2d(torch.cat(resized, dim=1), predictor.weight, predictor.bias)
    logits = predictor(levels, size)
    assert logits.shape == (2, 5, 13, 19) and logits.is_contiguous()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # The same gradients for the weights and every level.
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [predictor.weight, predictor.bias, *levels],
                                         upstream)  # fmt: skip
    grads = torch.autograd.grad(logits, [predictor.weight, predictor.bias, *levels], upstream)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_level_sum_predictor_replaces_the_plain_one_with_its_parameters():
    plain = torch.nn.Sequential(ConcatenatedLevelsPredictor(in_channels=4, levels=2, out_channels=3))
    weight = plain[0].weight
    assert use_level_sum_predictor(plain) == 1
    predictor = plain[0]
    assert type(predictor) is LevelSumPredictor and predictor.weight is weight
    state = predictor.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {"weight": (3, 8, 1, 1), "bias": (3,)}
    with pytest.raises(ValueError, match="expected 2 levels, got 1"):
        predictor([torch.zeros(1, 4, 2, 2)], (2, 2))
