"""Panoptic FCN model: config, backbone, training step, deformable path."""

from __future__ import annotations

import pytest
import torch
from detectron2.structures import PolygonMasks
from detectron2.utils.events import EventStorage
from panoptic_testing import shrunk_shapes_cfg

from panoptic_zoo.config import get_cfg
from panoptic_zoo.engine import Trainer
from panoptic_zoo.modeling.panoptic_fcn import KernelGenerator, add_panoptic_fcn_config

CONFIG = "panoptic_fcn_R_18.yaml"


def test_config_is_idempotent_and_touches_nothing_else():
    cfg = get_cfg()
    before = cfg.dump()
    cfg.MODEL.PANOPTIC_FCN.LOSS.SEGMENT_WEIGHT = 5.0
    del cfg.MODEL.PANOPTIC_FCN.INFERENCE["MASK_THRESH"]
    add_panoptic_fcn_config(cfg)
    assert cfg.MODEL.PANOPTIC_FCN.LOSS.SEGMENT_WEIGHT == 5.0  # kept
    assert cfg.MODEL.PANOPTIC_FCN.INFERENCE.MASK_THRESH == 0.4  # restored
    cfg.MODEL.PANOPTIC_FCN.LOSS.SEGMENT_WEIGHT = 3.0
    assert cfg.dump() == before
    # detectron2's SEM_SEG_HEAD (used by Panoptic FPN) keeps its defaults.
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "SemSegFPNHead"


def test_backbone_without_p2_to_p7_is_a_clear_error(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # P2-P6
    with pytest.raises(ValueError, match="p7"):
        Trainer.build_model(cfg)


def test_training_step_reaches_every_parameter_with_deformable_heads(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    cfg.MODEL.PANOPTIC_FCN.POSITION_HEAD.DEFORM = True
    cfg.MODEL.PANOPTIC_FCN.FEATURE_ENCODER.DEFORM = True
    model = Trainer.build_model(cfg)
    assert any("offset" in name for name, _ in model.kernel_generator.named_parameters())
    batch = next(iter(Trainer.build_train_loader(cfg)))
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {
        "loss_pos_things", "loss_pos_stuff", "loss_seg_things", "loss_seg_stuff"
    }  # fmt: skip
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # CPU inference takes the deformable layers' gather path (channels-last results).
    with torch.no_grad():
        results = model.eval()(batch)
    assert all(r["panoptic_seg"][0].shape == r["sem_seg"].shape[1:] for r in results)


def test_prior_bias_sets_initial_heatmap_probability():
    generator = KernelGenerator(
        in_channels=8, num_thing_classes=3, num_stuff_classes=2, kernel_dim=4,
        # GN (no conv bias) keeps the tower's output at 0 on a zero input.
        position_convs=1, position_dim=32, position_norm="GN", position_deform=False,
        prior_prob=0.1, kernel_convs=1, kernel_convs_dim=8, kernel_norm="",
    )  # fmt: skip
    things, stuff, thing_kernels, kernel_features = generator([torch.zeros(1, 8, 4, 4)] * 2)
    torch.testing.assert_close(things[0].sigmoid(), torch.full((1, 3, 4, 4), 0.1))
    assert stuff[0].shape == (1, 3, 4, 4) and len(thing_kernels) == len(kernel_features) == 2
    assert thing_kernels[0].shape == (1, 4, 4, 4) and kernel_features[0].shape == (1, 8, 4, 4)
    assert generator.embed_stuff(torch.zeros(5, 8)).shape == (5, 4)


# detectron2's DatasetMapper turns read-only numpy masks into tensors (its own warning).
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_trains_from_detectron2_separated_datasets_as_the_coco_configs_do(tiny_shapes, tmp_path):
    """COCO path: detectron2's DatasetMapper on a *_panoptic_separated dataset, bit masks."""
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    cfg.DATASETS.TRAIN = (f"{tiny_shapes['train']}_separated",)
    cfg.INPUT.DATASET_MAPPER_NAME = "DatasetMapper"
    cfg.INPUT.MASK_FORMAT = "bitmask"
    model = Trainer.build_model(cfg)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    with EventStorage():
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())

    # Polygon masks (detectron2's default MASK_FORMAT) are refused with the setting to change.
    polygons = [[[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]] for _ in range(len(batch[0]["instances"]))]
    batch[0]["instances"].gt_masks = PolygonMasks(polygons)
    with EventStorage(), pytest.raises(ValueError, match="INPUT.MASK_FORMAT"):
        model(batch)
