"""Panoptic-DeepLab's decoders upsampling into the concatenation: detectron2's result, bit for bit."""

import copy

import torch
from detectron2.modeling import build_model
from panoptic_testing import CONFIGS

from panoptic_zoo.acceleration.decoder_concat import UpsampledIntoConcat, use_upsampling_into_concat
from panoptic_zoo.config import get_cfg
from panoptic_zoo.modeling.panoptic_deeplab.heads import UpsampledConcat
from panoptic_zoo.utils.config import shrink_to_test_size


def test_upsampling_into_the_concatenation_is_torch_cat_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    projected = torch.randn(2, 3, 13, 19, generator=generator)  # batch 2, odd sizes
    coarse = torch.randn(2, 5, 7, 10, generator=generator)
    plain = torch.nn.Sequential(UpsampledConcat()).eval()
    with torch.no_grad():
        expected = plain[0](projected, coarse)
    assert use_upsampling_into_concat(plain) == 1 and type(plain[0]) is UpsampledIntoConcat
    with torch.no_grad():
        assert torch.equal(plain[0](projected, coarse), expected)
    # With gradients it concatenates as detectron2 does (out= records no graph).
    found = plain[0](projected.requires_grad_(), coarse)
    assert found.requires_grad and torch.equal(found, expected)


def test_panoptic_deeplab_heads_give_the_same_outputs_bit_for_bit():
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco" / "panoptic_deeplab_R_52_DC5_dsconv_200k.yaml"))
    shrink_to_test_size(cfg)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 67, 99, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.backbone(x)
        plain = copy.deepcopy(model)
        assert use_upsampling_into_concat(model) == 2
        for name in ("sem_seg_head", "ins_embed_head"):
            # The semantic head gives its logits, the instance head centers and offsets.
            expected = getattr(plain, name).layers(features)
            found = getattr(model, name).layers(features)
            assert all(map(torch.equal, torch.utils._pytree.tree_leaves(found),
                           torch.utils._pytree.tree_leaves(expected)))  # fmt: skip
