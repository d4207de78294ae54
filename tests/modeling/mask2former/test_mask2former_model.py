"""Mask2Former model: config, layers against hand-computed values, targets, training step,
optimizer settings (output contract, batch of two and training through the Trainer:
tests/modeling/test_method_contract.py)."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage
from detectron2.data import DatasetCatalog
from panoptic_testing import shrunk_shapes_cfg

from panoptic_zoo.config import get_cfg
from panoptic_zoo.engine import Trainer
from panoptic_zoo.modeling.mask2former import (
    Mask2FormerLSJDatasetMapper,
    MultiScaleDeformableAttention,
    add_mask2former_config,
    multi_scale_deformable_attention,
    sine_position_embedding,
)

CONFIG = "mask2former_R_18.yaml"


def test_config_is_idempotent_and_touches_nothing_else():
    cfg = get_cfg()
    before = cfg.dump()
    cfg.MODEL.MASK2FORMER.LOSS.DICE_WEIGHT = 1.0
    del cfg.MODEL.MASK2FORMER.DECODER["LAYERS"]
    add_mask2former_config(cfg)
    assert cfg.MODEL.MASK2FORMER.LOSS.DICE_WEIGHT == 1.0  # kept
    assert cfg.MODEL.MASK2FORMER.DECODER.LAYERS == 9  # restored: the paper's 9 layers
    cfg.MODEL.MASK2FORMER.LOSS.DICE_WEIGHT = 5.0
    assert cfg.dump() == before
    assert cfg.MODEL.MASK2FORMER.DECODER.NUM_QUERIES == 100
    assert cfg.MODEL.MASK2FORMER.PIXEL_DECODER.ENCODER_LAYERS == 6


def test_class_counts_come_from_the_dataset(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    assert (cfg.MODEL.MASK2FORMER.NUM_THING_CLASSES, cfg.MODEL.MASK2FORMER.NUM_STUFF_CLASSES) == (
        cfg.DATASETS.NUM_THING_CLASSES, cfg.DATASETS.NUM_STUFF_CLASSES,
    )  # fmt: skip
    model = Trainer.build_model(cfg)
    things, stuff = cfg.DATASETS.NUM_THING_CLASSES, cfg.DATASETS.NUM_STUFF_CLASSES
    assert model.head.predictor.class_embed.out_features == things + stuff + 1


def test_deformable_attention_samples_bilinearly():
    # One level of 2 x 3 values, one head of dimension 1, one query with two points: (x, y) =
    # (0.5, 0.5) is the centre between cells (row 0/1, column 1): the mean of 1, 4 -> 2.5 ...
    values = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    value = values.flatten()[None, :, None, None]  # (N, h*w, heads, dim)
    locations = torch.tensor([[0.5, 0.5], [1 / 6, 0.25]]).view(1, 1, 1, 1, 2, 2)
    weights = torch.tensor([0.25, 0.75]).view(1, 1, 1, 1, 2)
    output = multi_scale_deformable_attention(value, [(2, 3)], locations, weights)
    # ... and (1/6, 1/4) is the centre of cell (0, 0): 0.0.
    assert output.shape == (1, 1, 1)
    assert output.item() == pytest.approx(0.25 * 2.5 + 0.75 * 0.0)


def test_deformable_attention_starts_as_rings_with_uniform_weights():
    attention = MultiScaleDeformableAttention(dim=8, levels=2, heads=4, points=2)
    offsets = attention.sampling_offsets.bias.view(4, 2, 2, 2)
    # Head 1 points at 90 degrees: (0, 1) scaled to the square's border, points at 1 and 2 cells.
    torch.testing.assert_close(offsets[1, 0], torch.tensor([[0.0, 1.0], [0.0, 2.0]]),
                               atol=1e-6, rtol=0)  # fmt: skip
    assert torch.equal(offsets[0], offsets[0, :1].expand(2, 2, 2))  # the same on every level
    assert not attention.attention_weights.weight.any()


def test_sine_position_embedding_by_hand():
    embedding = sine_position_embedding(2, 3, dim=4)
    assert embedding.shape == (4, 2, 3)
    # Channels 0, 1: y at frequency 1 (sin, cos); 2, 3: x. Row 1 of 2: y = 2 / 2 * 2 pi.
    y = 2 / (2 + 1e-6) * 2 * math.pi
    x = 1 / (3 + 1e-6) * 2 * math.pi
    assert embedding[0, 1, 0].item() == pytest.approx(math.sin(y), abs=1e-5)
    assert embedding[1, 1, 0].item() == pytest.approx(math.cos(y / 10000 ** (0 / 2)), abs=1e-5)
    assert embedding[2, 1, 0].item() == pytest.approx(math.sin(x), abs=1e-5)
    assert embedding[3, 0, 0].item() == pytest.approx(math.cos(x), abs=1e-5)


def _record(size, stuff_classes=(2, 4)):
    h, w = size
    instances = Instances(size)
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    masks[0, 2:10, 3:12] = True
    masks[1, 20:30, 5:25] = True
    instances.gt_masks = BitMasks(masks)
    instances.gt_classes = torch.tensor([3, 0])
    sem_seg = torch.full(size, stuff_classes[0])
    sem_seg[:, w // 2 :] = stuff_classes[1]
    sem_seg[masks.any(0)] = 0
    sem_seg[0] = 255
    return {"image": torch.rand(3, h, w) * 255, "instances": instances, "sem_seg": sem_seg}


def test_targets_are_things_then_each_stuff_class(tiny_shapes, tmp_path):
    model = Trainer.build_model(shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path))
    record = _record((37, 41))
    targets = model.targets(record, (64, 64))
    # Things keep their classes; stuff class s of the separated ids becomes 5 + s - 1.
    assert targets["labels"].tolist() == [3, 0, 6, 8]
    assert targets["masks"].shape == (4, 64, 64) and targets["masks"].dtype == torch.bool
    assert not targets["masks"][:, 37:].any() and not targets["masks"][:, :, 41:].any()
    assert torch.equal(targets["masks"][0, :37, :41], record["instances"].gt_masks.tensor[0])
    stuff_2 = record["sem_seg"] == 2
    assert torch.equal(targets["masks"][2, :37, :41], stuff_2)
    assert not targets["masks"][:, 0].any()  # void is no segment's


def test_training_needs_sem_seg(tiny_shapes, tmp_path):
    model = Trainer.build_model(shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path))
    record = _record((37, 41))
    del record["sem_seg"]
    with pytest.raises(ValueError, match="COCOPanopticDatasetMapper"):
        model([record])


def test_training_step_reaches_every_parameter(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    model = Trainer.build_model(cfg)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert len(batch) == 2
    with EventStorage():
        losses = model(batch)
    # The last prediction's and the 9 earlier ones' (learnable queries + 8 layers).
    assert len(losses) == 3 * 10 and {"loss_ce", "loss_mask", "loss_dice", "loss_dice_8"} <= set(
        losses
    )
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unreached == []


def test_image_without_segments_trains(tiny_shapes, tmp_path):
    model = Trainer.build_model(shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path))
    empty = _record((37, 41))
    empty["instances"] = Instances((37, 41))
    empty["instances"].gt_classes = torch.zeros(0, dtype=torch.int64)
    empty["sem_seg"][:] = 255
    losses = model([empty, _record((45, 39))])
    assert all(torch.isfinite(v) for v in losses.values())


def test_optimizer_follows_the_official_trainer():
    cfg = get_cfg()
    cfg.merge_from_file("configs/coco/mask2former_R_50.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18,
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.MASK2FORMER.PIXEL_DECODER.ENCODER_LAYERS", 1,
                         "MODEL.MASK2FORMER.DECODER.LAYERS", 1])  # fmt: skip
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    settings = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups
                for p in g["params"]}  # fmt: skip
    assert settings[id(model.backbone.res2[0].conv1.weight)] == (1e-5, 0.05)  # 0.1 x lr
    assert settings[id(model.head.predictor.query_feat.weight)] == (1e-4, 0.0)  # embedding
    assert settings[id(model.head.predictor.decoder_norm.weight)] == (1e-4, 0.0)  # norm
    assert settings[id(model.head.predictor.class_embed.weight)] == (1e-4, 0.05)
    assert isinstance(optimizer, torch.optim.AdamW)

    # Full-model clipping: one norm over all gradients, scaled to 0.01.
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    total = math.sqrt(sum(p.numel() for p in model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    norm = math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters()))
    assert norm == pytest.approx(0.01, rel=1e-4) and total > 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_lsj_mapper_gives_square_training_inputs(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg(CONFIG, tiny_shapes, tmp_path)
    cfg.INPUT.DATASET_MAPPER_NAME = "Mask2FormerLSJDatasetMapper"
    cfg.MODEL.MASK2FORMER.LSJ.IMAGE_SIZE = 96
    mapper = Mask2FormerLSJDatasetMapper(cfg, is_train=True)
    for record in DatasetCatalog.get(tiny_shapes["train"])[:3]:
        mapped = mapper(record)
        assert mapped["image"].shape[1:] == (96, 96)
        assert mapped["sem_seg"].shape == (96, 96)
        assert mapped["instances"].image_size == (96, 96)
    evaluated = Mask2FormerLSJDatasetMapper(cfg, is_train=False)(
        DatasetCatalog.get(tiny_shapes["val"])[0]
    )
    assert max(evaluated["image"].shape[1:]) <= cfg.INPUT.MAX_SIZE_TEST
