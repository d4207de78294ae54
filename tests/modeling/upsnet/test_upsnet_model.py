"""UPSNet through the real config, mapper, model and trainer on the tiny shapes dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg as get_detectron2_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.utils.events import EventStorage
from panoptic_testing import shrunk_shapes_cfg

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import build_dataset_mapper
from panoptic_zoo.engine import Trainer
from panoptic_zoo.modeling.upsnet import add_upsnet_config

CONFIG = "upsnet_R_18.yaml"
NUM_STUFF = 4  # shapes: 4 stuff classes, 5 thing classes


def _cfg(tiny_shapes, tmp_path, max_iter: int = 2):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path, max_iter=max_iter)
    cfg.MODEL.UPSNET.SEMANTIC_HEAD.CONV_DIMS = [32, 32, 32]  # GroupNorm needs multiples of 32
    return cfg


def test_config_is_idempotent_and_adds_only_its_node():
    cfg = get_cfg()
    once = cfg.dump()
    add_upsnet_config(cfg)
    assert cfg.dump() == once
    cfg.MODEL.UPSNET.PANOPTIC_HEAD.LOSS_WEIGHT = 0.1
    cfg.MODEL.UPSNET.INFERENCE.pop("NMS_THRESH")
    add_upsnet_config(cfg)
    assert cfg.MODEL.UPSNET.PANOPTIC_HEAD.LOSS_WEIGHT == 0.1  # a set value stays
    assert cfg.MODEL.UPSNET.INFERENCE.NMS_THRESH == 0.5  # a missing key is added
    plain = get_detectron2_cfg()
    add_upsnet_config(plain)
    plain.MODEL.pop("UPSNET")
    assert plain.dump() == get_detectron2_cfg().dump()


def test_mapper_semantic_target_has_stuff_first_then_things(tiny_shapes, tmp_path):
    cfg = _cfg(tiny_shapes, tmp_path)
    record = DatasetCatalog.get(tiny_shapes["train"])[0]
    np.random.seed(0)  # detectron2's random resize and flip draw from numpy
    upsnet = build_dataset_mapper(cfg, is_train=True)(record)
    cfg.INPUT.DATASET_MAPPER_NAME = "COCOPanopticDatasetMapper"
    np.random.seed(0)
    merged = build_dataset_mapper(cfg, is_train=True)(record)["sem_seg"]
    semantic = upsnet["sem_seg"]
    assert semantic.shape == merged.shape
    stuff = (merged != 255) & (merged > 0)
    assert torch.equal(semantic[stuff], merged[stuff] - 1)
    assert torch.equal(semantic == 255, merged == 255)
    things = merged == 0
    assert things.any() and (semantic[things] >= NUM_STUFF).all()
    for cls, mask in zip(upsnet["instances"].gt_classes, upsnet["instances"].gt_masks.tensor):
        assert (semantic[mask] == NUM_STUFF + cls).all()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.UPSNET.NUM_STUFF_CLASSES", 0, "NUM_STUFF_CLASSES"),
        ("MODEL.MASK_ON", False, "MASK_ON"),
        ("MODEL.UPSNET.PANOPTIC_HEAD.BOX_KEEP_FRACTION", 0.0, "BOX_KEEP_FRACTION"),
        ("MODEL.UPSNET.SEMANTIC_HEAD.IN_FEATURES", ["p2", "p9"], "p9"),
    ],
)
def test_bad_config_is_a_clear_error(tiny_shapes, tmp_path, key, value, message):
    cfg = _cfg(tiny_shapes, tmp_path)
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=message):
        Trainer.build_model(cfg)


def test_fpn_global_pooling_adds_the_pooled_projection_to_the_top_lateral(tiny_shapes, tmp_path):
    cfg = _cfg(tiny_shapes, tmp_path)
    cfg.MODEL.UPSNET.FPN_GLOBAL_POOLING = True
    fpn = Trainer.build_model(cfg).backbone
    lateral = fpn.fpn_lateral5
    assert fpn.lateral_convs[0] is lateral
    res5 = torch.randn(2, lateral.in_channels, 3, 5)
    with torch.no_grad():
        plain = F.conv2d(res5, lateral.weight, lateral.bias)
        if lateral.norm is not None:
            plain = lateral.norm(plain)
        pooled = res5.mean(dim=(2, 3)) @ lateral.global_pooling.weight.T
        expected = plain + (pooled + lateral.global_pooling.bias)[:, :, None, None]
        assert torch.allclose(lateral(res5), expected, atol=1e-5)


def test_fpn_global_pooling_needs_an_fpn(tiny_shapes, tmp_path):
    from panoptic_zoo.modeling.upsnet.fpn_global_pooling import add_fpn_global_pooling

    with pytest.raises(ValueError, match="FPN_GLOBAL_POOLING needs a detectron2 FPN"):
        add_fpn_global_pooling(torch.nn.Conv2d(1, 1, 1))


def test_training_step_on_batch_of_two_has_all_losses(tiny_shapes, tmp_path):
    cfg = _cfg(tiny_shapes, tmp_path)
    model = Trainer.build_model(cfg)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert len(batch) == 2
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {
        "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask",
        "loss_sem_seg", "loss_sem_seg_roi", "loss_panoptic",
    }  # fmt: skip
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    losses["loss_panoptic"].backward()
    # The panoptic loss reaches the mask head (gt-box mask logits) and the deformable offsets.
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0
    assert model.semantic_head.subnetwork[0].offset.weight.grad.abs().sum() > 0


def test_instances_are_detectron2_roi_heads_predictions(tiny_shapes, tmp_path):
    """The mask head runs once for detections and panoptic candidates: masks as detectron2's."""
    cfg = _cfg(tiny_shapes, tmp_path)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # an untrained model: keep its detections
    model = Trainer.build_model(cfg).eval()
    image = build_dataset_mapper(cfg, is_train=False)(DatasetCatalog.get(tiny_shapes["val"])[0])
    with torch.no_grad():
        got = model([image])[0]["instances"]
        images = model.preprocess_image([image])
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        expected, _ = model.roi_heads(images, features, proposals, None)
    expected = detector_postprocess(expected[0], image["height"], image["width"])
    assert len(got) > 0
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        got_value, expected_value = got.get(field), expected.get(field)
        if field == "pred_boxes":
            got_value, expected_value = got_value.tensor, expected_value.tensor
        assert torch.equal(got_value, expected_value), field
