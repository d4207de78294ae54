"""
PanopticDeepLabModel against detectron2's reference with the same weights, on odd input sizes,
on batches of 2, and its config.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg as get_detectron2_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.projects.deeplab import DeepLabV3PlusHead
from detectron2.projects.panoptic_deeplab import (
    add_panoptic_deeplab_config as add_reference_config,
)

from panoptic_zoo.config import get_cfg
from panoptic_zoo.modeling.panoptic_deeplab import add_panoptic_deeplab_config
from panoptic_zoo.modeling.panoptic_deeplab.heads import _DecoderWithConcatModule

NUM_THINGS, NUM_STUFF, DIVISOR = 3, 2, 1000
REFERENCE_DATASET = "panoptic_deeplab_parity_test"
CROP = (64, 64)  # ASPP pools over 4x4 res5 windows (output stride 16)

BACKBONE = [  # a tiny R50 with DeepLab's stem, dilated res5 and multi-grid
    "MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone", "MODEL.BACKBONE.FREEZE_AT", 0,
    "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.STEM_TYPE", "deeplab",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.RESNETS.STRIDE_IN_1X1", False,
    "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res5"], "MODEL.RESNETS.RES5_DILATION", 2,
    "MODEL.RESNETS.RES5_MULTI_GRID", [1, 2, 4], "MODEL.DEVICE", "cpu",
    "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", CROP,
]  # fmt: skip
BRANCH = {"PROJECT_CHANNELS": [8, 16], "ASPP_CHANNELS": 16, "ASPP_DILATIONS": [1, 2, 3],
          "CONVS_DIM": 16, "COMMON_STRIDE": 4}  # fmt: skip
POSTPROCESS = {"STUFF_AREA": 16, "NMS_KERNEL": 5, "CENTER_THRESHOLD": 0.1, "TOP_K_INSTANCE": 200,
               "SIZE_DIVISIBILITY": 16}  # fmt: skip


def _options(prefix: str, values: dict) -> list:
    return [item for key, value in values.items() for item in (f"{prefix}.{key}", value)]


def zoo_cfg(norm="BN"):
    cfg = get_cfg()
    cfg.merge_from_list(BACKBONE + ["MODEL.RESNETS.NORM", norm])
    node = "MODEL.PANOPTIC_DEEPLAB"
    cfg.merge_from_list(
        ["MODEL.META_ARCHITECTURE", "PanopticDeepLabModel",
         f"{node}.NUM_THING_CLASSES", NUM_THINGS, f"{node}.NUM_STUFF_CLASSES", NUM_STUFF,
         f"{node}.USE_DEPTHWISE_SEPARABLE_CONV", True, f"{node}.LABEL_DIVISOR", DIVISOR]
        + _options(f"{node}.SEM_SEG_HEAD", {**BRANCH, "HEAD_CHANNELS": 16, "NORM": norm,
                                            "LOSS_TYPE": "hard_pixel_mining", "LOSS_TOP_K": 0.2})
        + _options(f"{node}.INS_EMBED_HEAD", {**BRANCH, "HEAD_CHANNELS": 8, "NORM": norm})
        + _options(node, POSTPROCESS)
    )  # fmt: skip
    return cfg


def reference_cfg():
    cfg = get_detectron2_cfg()
    add_reference_config(cfg)
    cfg.merge_from_list(BACKBONE + ["MODEL.RESNETS.NORM", "BN"])
    cfg.merge_from_list(
        ["MODEL.META_ARCHITECTURE", "PanopticDeepLab", "DATASETS.TRAIN", (REFERENCE_DATASET,),
         "MODEL.SEM_SEG_HEAD.NAME", "PanopticDeepLabSemSegHead",
         "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res3", "res5"],
         "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", ["res2", "res3"],
         "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_THINGS + NUM_STUFF,
         "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV", True,
         "MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV", True,
         "MODEL.PANOPTIC_DEEPLAB.PREDICT_INSTANCES", True]
        + _options("MODEL.SEM_SEG_HEAD", {**BRANCH, "HEAD_CHANNELS": 16, "NORM": "BN",
                                          "LOSS_TYPE": "hard_pixel_mining", "LOSS_TOP_K": 0.2})
        + _options("MODEL.INS_EMBED_HEAD", {**BRANCH, "HEAD_CHANNELS": 8, "NORM": "BN"})
        + _options("MODEL.PANOPTIC_DEEPLAB", POSTPROCESS)
    )  # fmt: skip
    MetadataCatalog.get(REFERENCE_DATASET).set(
        thing_dataset_id_to_contiguous_id={i: i for i in range(NUM_THINGS)},
        label_divisor=DIVISOR,
    )
    return cfg


@pytest.fixture(scope="module")
def models():
    """The reference with larger predictor weights (so that centers and classes vary), and
    panoptic_zoo's model with the same state dict; both in eval mode."""
    torch.manual_seed(0)
    reference = build_model(reference_cfg()).eval()
    with torch.no_grad():
        reference.sem_seg_head.predictor.weight.normal_(0, 0.5)
        reference.ins_embed_head.center_predictor.weight.normal_(0, 0.3)
        reference.ins_embed_head.center_predictor.bias.fill_(0.2)
        reference.ins_embed_head.offset_predictor.weight.normal_(0, 3.0)
    model = build_model(zoo_cfg(norm="SyncBN")).eval()  # SyncBN -> BN on CPU
    model.load_state_dict(reference.state_dict())
    return reference, model


def _image(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)


def test_same_outputs_as_reference(models):
    reference, model = models
    image = _image(64, 128)
    x = ((image.float() - model.pixel_mean) / model.pixel_std)[None]
    with torch.no_grad():
        features, reference_features = model.backbone(x), reference.backbone(x)
        assert all(torch.equal(features[k], reference_features[k]) for k in features)
        assert torch.equal(model.sem_seg_head(features)[0], reference.sem_seg_head(features)[0])
        for ours, theirs in zip(model.ins_embed_head(features)[:2],
                                reference.ins_embed_head(features)[:2]):  # fmt: skip
            assert torch.equal(ours, theirs)
        inputs = [{"image": image, "height": 64, "width": 128}]
        (output,), (expected,) = model(inputs), reference(inputs)

    sem_seg = expected["sem_seg"]  # unified classes; ours merges the thing classes into 0
    assert torch.allclose(output["sem_seg"][0], sem_seg[:NUM_THINGS].logsumexp(0))
    assert torch.equal(output["sem_seg"][1:], sem_seg[NUM_THINGS:])

    segment_ids, segments_info = output["panoptic_seg"]
    expected_labels = expected["panoptic_seg"][0]
    # Same segments: segment ids and reference labels correspond one to one ...
    pairs = torch.unique(
        torch.stack((segment_ids.long().flatten(), expected_labels.flatten())), dim=1
    )
    assert pairs.shape[1] == len(segment_ids.unique()) == len(expected_labels.unique())
    # ... void to void, with the same classes.
    for segment_id, label in pairs.t().tolist():
        if segment_id == 0:
            assert label == -1
            continue
        info = segments_info[segment_id - 1]
        unified = info["category_id"] if info["isthing"] else NUM_THINGS + info["category_id"] - 1
        expected_class = label // DIVISOR
        assert info["id"] == segment_id and unified == expected_class
        assert info["isthing"] == (expected_class < NUM_THINGS)
        assert info["area"] == (segment_ids == segment_id).sum().item()
    assert sum(info["isthing"] for info in segments_info) >= 2, "make the test see instances"

    # Same instances (masks, classes, paper scores), possibly in another order.
    ours, theirs = output["instances"], expected["instances"]
    assert len(ours) == len(theirs)
    same_mask = (ours.pred_masks[:, None] == theirs.pred_masks[None]).flatten(2).all(dim=2)
    match = same_mask.int().argmax(dim=0)
    assert same_mask.sum(dim=0).tolist() == [1] * len(theirs)
    assert torch.equal(ours.pred_classes[match], theirs.pred_classes)
    assert torch.allclose(ours.scores[match], theirs.scores, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours.pred_boxes.tensor[match], theirs.pred_boxes.tensor)
    thing_scores = [info["score"] for info in segments_info if info["isthing"]]
    assert thing_scores == ours.scores.tolist()


def test_decoder_is_detectron2s(models):
    _, model = models
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 67, 99, generator=generator)  # batch 2, odd sizes
    with torch.no_grad():
        features = model.backbone(x)
        for head in (model.sem_seg_head, model.ins_embed_head):
            expected = DeepLabV3PlusHead.layers(head, features)  # upsample, then torch.cat
            assert torch.equal(_DecoderWithConcatModule.layers(head, features), expected)


def test_odd_input_sizes_where_the_reference_fails(models):
    reference, model = models
    inputs = [{"image": _image(67, 99, seed=1), "height": 67, "width": 99}]
    with pytest.raises(ValueError, match="divisible"), torch.no_grad():
        reference(inputs)  # ASPP pooling window 4x4 does not divide the 5x7 res5 map
    with torch.no_grad():
        (output,) = model(inputs)
    assert output["panoptic_seg"][0].shape == (67, 99)
    assert output["sem_seg"].shape == (1 + NUM_STUFF, 67, 99)


def test_batch_of_two_odd_sizes_and_resized_outputs(models):
    _, model = models
    inputs = [
        {"image": _image(67, 99, seed=2), "height": 67, "width": 99},
        {"image": _image(45, 81, seed=3), "height": 90, "width": 161},  # 2x the input size
    ]
    with torch.no_grad():
        outputs = model(inputs)
    for output, x in zip(outputs, inputs):
        segment_ids, segments_info = output["panoptic_seg"]
        assert segment_ids.shape == (x["height"], x["width"])
        assert set(segment_ids.unique().tolist()) - {0} == {s["id"] for s in segments_info}


def test_training_losses_on_batch_of_two_odd_sizes(models):
    _, model = models
    model.train()
    inputs = []
    for height, width in ((67, 99), (45, 81)):
        sem_seg = torch.randint(0, NUM_THINGS + NUM_STUFF, (height, width))
        inputs.append({
            "image": _image(height, width), "sem_seg": sem_seg,
            "sem_seg_weights": torch.ones(height, width), "center": torch.rand(height, width),
            "center_weights": torch.ones(1, height, width),
            "offset": torch.randn(2, height, width), "offset_weights": torch.ones(1, height, width),
        })  # fmt: skip
    try:
        losses = model(inputs)
    finally:
        model.eval()
    assert set(losses) == {"loss_sem_seg", "loss_center", "loss_offset"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_config_is_idempotent_neutral_and_checked():
    cfg = get_cfg()
    before = cfg.dump()
    add_panoptic_deeplab_config(cfg)
    assert cfg.dump() == before
    # No solver changes for anybody: detectron2's values stand, the project's additions are SGD.
    detectron2_solver = get_detectron2_cfg().SOLVER
    assert {k: cfg.SOLVER[k] for k in detectron2_solver} == detectron2_solver
    assert cfg.SOLVER.OPTIMIZER == "SGD"
    cfg.MODEL.PANOPTIC_DEEPLAB.TARGETS.GAUSSIAN_SIGMA = 3.0
    add_panoptic_deeplab_config(cfg)
    assert cfg.MODEL.PANOPTIC_DEEPLAB.TARGETS.GAUSSIAN_SIGMA == 3.0

    unset = zoo_cfg()
    unset.MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES = -1
    with pytest.raises(ValueError, match="NUM_THING_CLASSES"):
        build_model(unset)
