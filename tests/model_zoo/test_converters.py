"""
Converters from official checkpoints, on synthetic state dicts that carry the official key names
and shapes (written here from the official model definitions, independently of the converters),
checked against models this project's configs build: every tensor filled, shapes equal, unmapped
keys reported, and the values where a conversion transforms them.
"""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from panoptic_testing import CONFIGS, REPO

from panoptic_zoo.checkpoint import build_checkpointer
from panoptic_zoo.config import get_cfg
from panoptic_zoo.model_zoo.converters import (
    ConversionError,
    convert_detectron2_panoptic_deeplab,
    convert_detectron2_panoptic_fpn,
    convert_official_panoptic_fcn,
    convert_official_upsnet,
    load_release_file,
    official_input_notes,
    save_converted,
    unified_class_order,
    verify_against_model,
)

spec = importlib.util.spec_from_file_location("convert", REPO / "tools" / "convert_checkpoint.py")
convert_checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_checkpoint)


def _cfg(config: str, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def _randomized(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=generator) for k, s in shapes.items()}


# --- detectron2 Panoptic FPN: model zoo pickle -> weights-only .pth ---------------------------


def test_detectron2_panoptic_fpn_pickle_round_trip(tmp_path):
    cfg = _cfg("shapes/panoptic_fpn_R_18.yaml")
    torch.manual_seed(0)
    official = build_model(cfg).eval()
    pkl = tmp_path / "model_final.pkl"
    arrays = {k: v.numpy() for k, v in official.state_dict().items()}
    arrays["proposal_generator.anchor_generator.cell_anchors.0"] = np.zeros((3, 4), np.float32)
    with open(pkl, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo"}, f)

    conversion = convert_detectron2_panoptic_fpn(load_release_file(pkl))
    assert conversion.unused == ["proposal_generator.anchor_generator.cell_anchors.0"]
    assert not conversion.notes
    model = build_model(cfg).eval()
    verify_against_model(conversion, model)
    out = save_converted(tmp_path / "converted.pth", conversion, "test")
    saved = torch.load(out, weights_only=True)["model"]
    model.load_state_dict(saved, strict=True)
    image = {"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}
    with torch.no_grad():
        expected, got = official([image])[0], model([image])[0]
    assert torch.equal(expected["sem_seg"], got["sem_seg"])

    # The command line does the same, and the project's checkpointer loads the result exactly.
    cli_output = tmp_path / "cli.pth"
    config = str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml")
    argv = ["detectron2-panoptic-fpn", "--input", str(pkl), "--config", config,
            "--output", str(cli_output), "--opts", "MODEL.DEVICE", "cpu"]  # fmt: skip
    assert convert_checkpoint.main(argv) == 0
    reloaded = build_model(cfg)
    build_checkpointer(cfg, reloaded, exact_fit=True).load(str(cli_output), checkpointables=[])
    assert torch.equal(reloaded.state_dict()["sem_seg_head.predictor.weight"],
                       official.state_dict()["sem_seg_head.predictor.weight"])  # fmt: skip


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_release_pickles_are_read_without_running_code(tmp_path):
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"w": _Payload()}, "__author__": "x"}, f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_release_file(pkl)


# --- detectron2 Panoptic-DeepLab: same names, semantic classes reordered ----------------------


def test_detectron2_panoptic_deeplab_cityscapes_class_order():
    source = MetadataCatalog.get("cityscapes_fine_panoptic_train")  # detectron2's standard ids
    target = MetadataCatalog.get("cityscapes_fine_panoptic_train_separated")
    order = unified_class_order(source, target)
    # Unified: 8 things (person..bicycle) then 11 stuff (road..sky); detectron2: trainIds.
    assert order == list(range(11, 19)) + list(range(11))

    cfg = _cfg(
        "shapes/panoptic_deeplab_R_18.yaml",
        "MODEL.PANOPTIC_DEEPLAB.NUM_THING_CLASSES", 8, "MODEL.PANOPTIC_DEEPLAB.NUM_STUFF_CLASSES", 11,
    )  # fmt: skip
    model = build_model(cfg)
    ours = {k: v.clone() for k, v in model.state_dict().items()}
    official = dict(ours)  # detectron2's reference heads have these names (parity test)
    for key in ("sem_seg_head.predictor.weight", "sem_seg_head.predictor.bias"):
        official[key] = torch.empty_like(ours[key])
        official[key][torch.tensor(order)] = ours[key]  # unified class u sits at channel order[u]

    conversion = convert_detectron2_panoptic_deeplab(official, order)
    verify_against_model(conversion, model)
    for key, value in ours.items():
        assert torch.equal(conversion.state_dict[key], value), key


def test_panoptic_deeplab_class_order_must_fit_the_source():
    weights = {"sem_seg_head.predictor.weight": torch.zeros(3, 4, 1, 1),
               "sem_seg_head.predictor.bias": torch.zeros(3)}  # fmt: skip
    with pytest.raises(ConversionError, match="not a selection"):
        convert_detectron2_panoptic_deeplab(weights, [0, 1, 5])
    with pytest.raises(ConversionError, match="not a Panoptic-DeepLab"):
        convert_detectron2_panoptic_deeplab({}, [0])


# --- official Panoptic FCN --------------------------------------------------------------------


def official_panoptic_fcn_shapes(cfg, backbone_shapes, deform: bool) -> dict[str, tuple]:
    """Keys and shapes of dvlab-research/PanopticFCN's model (head.py, backbone_utils.py)."""
    fcn = cfg.MODEL.PANOPTIC_FCN
    fpn_dim, semantic_dim = cfg.MODEL.FPN.OUT_CHANNELS, fcn.FEATURE_ENCODER.FPN_DIM
    position_dim, kernel_dim = fcn.POSITION_HEAD.CONVS_DIM, fcn.KERNEL_HEAD.CONVS_DIM
    encoder_dim = fcn.FEATURE_ENCODER.CONVS_DIM
    shapes = dict(backbone_shapes)
    for level, stages in (("p2", 1), ("p3", 1), ("p4", 2), ("p5", 3)):
        for j in range(stages):  # conv (+ GN) then upsampling, per stage
            shapes[f"semantic_fpn.{level}.{2 * j}.weight"] = (
                semantic_dim,
                fpn_dim if j == 0 else semantic_dim,
                3,
                3,
            )
            shapes[f"semantic_fpn.{level}.{2 * j}.norm.weight"] = (semantic_dim,)
            shapes[f"semantic_fpn.{level}.{2 * j}.norm.bias"] = (semantic_dim,)
    for k in range(1, 4):  # SingleHead "position_head", no coordinates, GN
        layer = f"position_head.position_head.position_head_head_{k}"
        c_in = fpn_dim if k == 1 else position_dim
        if deform:  # ModulatedDeformConvWithOff
            shapes[f"{layer}.offset_mask_conv.weight"] = (27, c_in, 3, 3)
            shapes[f"{layer}.offset_mask_conv.bias"] = (27,)
            shapes[f"{layer}.dcnv2.weight"] = (position_dim, c_in, 3, 3)
            shapes[f"{layer}.dcnv2.norm.weight"] = shapes[f"{layer}.dcnv2.norm.bias"] = (
                position_dim,
            )
        else:
            shapes[f"{layer}.weight"] = (position_dim, c_in, 3, 3)
            shapes[f"{layer}.norm.weight"] = shapes[f"{layer}.norm.bias"] = (position_dim,)
    shapes["position_head.out_inst.weight"] = (fcn.NUM_THING_CLASSES, position_dim, 3, 3)
    shapes["position_head.out_inst.bias"] = (fcn.NUM_THING_CLASSES,)
    shapes["position_head.out_sem.weight"] = (fcn.NUM_STUFF_CLASSES + 1, position_dim, 3, 3)
    shapes["position_head.out_sem.bias"] = (fcn.NUM_STUFF_CLASSES + 1,)
    for k in range(1, 4):  # SingleHead "kernel_head", with coordinates, GN
        layer = f"kernel_head.kernel_head.kernel_head_head_{k}"
        shapes[f"{layer}.weight"] = (kernel_dim, fpn_dim + 2 if k == 1 else kernel_dim, 3, 3)
        shapes[f"{layer}.norm.weight"] = shapes[f"{layer}.norm.bias"] = (kernel_dim,)
    shapes["kernel_head.out_conv.weight"] = (kernel_dim, kernel_dim, 3, 3)
    shapes["kernel_head.out_conv.bias"] = (kernel_dim,)
    for k in range(1, 4):  # SingleHead "encode_head", with coordinates, no norm (bias)
        layer = f"feature_encoder.encode_head.encode_head_head_{k}"
        shapes[f"{layer}.weight"] = (encoder_dim, semantic_dim + 2 if k == 1 else encoder_dim, 3, 3)
        shapes[f"{layer}.bias"] = (encoder_dim,)
    for generator in ("thing_generator", "stuff_generator"):
        shapes[f"{generator}.embed_extractor.weight"] = (encoder_dim, kernel_dim, 1, 1)
        shapes[f"{generator}.embed_extractor.bias"] = (encoder_dim,)
    return shapes


@pytest.mark.parametrize("deform", [False, True])
def test_official_panoptic_fcn(deform):
    cfg = _cfg(
        "shapes/panoptic_fcn_R_18.yaml", "MODEL.PANOPTIC_FCN.FEATURE_ENCODER.NORM", "",  # official
        "MODEL.PANOPTIC_FCN.POSITION_HEAD.DEFORM", deform,
    )  # fmt: skip
    model = build_model(cfg)
    backbone = {f"backbone.{k}": v.shape for k, v in model.backbone.state_dict().items()}
    official = _randomized(official_panoptic_fcn_shapes(cfg, backbone, deform))

    conversion = convert_official_panoptic_fcn(official)
    verify_against_model(conversion, model)
    assert conversion.unused == [] and conversion.notes == []  # exact
    model.load_state_dict(conversion.state_dict)
    generator = model.kernel_generator
    assert torch.equal(generator.stuff_embed.weight, official["stuff_generator.embed_extractor.weight"])
    assert torch.equal(generator.kernel_output.bias, official["kernel_head.out_conv.bias"])
    if deform:
        source = "position_head.position_head.position_head_head_1.offset_mask_conv.weight"
        assert torch.equal(generator.position_tower[0].conv.offset.weight, official[source])


def test_official_panoptic_fcn_cli_refuses_other_input_normalization(tmp_path):
    """The golden fixture's official weights through the command line: the official pixel
    statistics convert; detectron2's BGR-ordered ones would not give the official outputs."""
    golden = torch.load(
        REPO / "tests" / "modeling" / "panoptic_fcn" / "golden" / "official_inference.pth",
        weights_only=True,
    )
    weights, config = tmp_path / "official.pth", tmp_path / "config.yaml"
    torch.save({"model": golden["official_state_dict"]}, weights)
    config.write_text(golden["config_yaml"])
    argv = ["panoptic-fcn", "--input", str(weights), "--config", str(config),
            "--output", str(tmp_path / "converted.pth")]  # fmt: skip
    assert convert_checkpoint.main(argv) == 0
    bgr_mean = "[103.53, 116.28, 123.675]"
    assert convert_checkpoint.main([*argv, "--opts", "MODEL.PIXEL_MEAN", bgr_mean]) == 1
    assert convert_checkpoint.main([*argv, "--opts", "INPUT.FORMAT", "RGB"]) == 1
    # The COCO configs, which mirror the official ones, carry the official values.
    cfg = _cfg("coco/panoptic_fcn_R_50_3x.yaml")
    assert official_input_notes(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT) == []


# --- official UPSNet --------------------------------------------------------------------------


def official_upsnet_shapes(
    fpn_dim: int, things: int, stuff: int, with_gap: bool, fcn_layers: int
) -> dict[str, tuple]:
    """Keys and shapes of uber-research/UPSNet's resnet_50_upsnet (no norms)."""

    def bn(prefix, c):
        return {f"{prefix}.{s}": (c,) for s in ("weight", "bias", "running_mean", "running_var")}

    shapes = {
        "resnet_backbone.conv1.conv1.weight": (64, 3, 7, 7),
        **bn("resnet_backbone.conv1.bn1", 64),
    }
    in_channels = 64
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=2):
        for i in range(blocks):
            block = f"resnet_backbone.res{stage}.layers.{i}"
            shapes[f"{block}.conv1.weight"] = (planes, in_channels, 1, 1)
            shapes[f"{block}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{block}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for j, c in ((1, planes), (2, planes), (3, planes * 4)):
                shapes.update(bn(f"{block}.bn{j}", c))
            if i == 0:
                shapes[f"{block}.downsample.0.weight"] = (planes * 4, in_channels, 1, 1)
                shapes.update(bn(f"{block}.downsample.1", planes * 4))
            in_channels = planes * 4
    for k, c in ((2, 256), (3, 512), (4, 1024), (5, 2048)):
        shapes[f"fpn.fpn_p{k}_1x1.weight"], shapes[f"fpn.fpn_p{k}_1x1.bias"] = (fpn_dim, c, 1, 1), (
            fpn_dim,
        )
        shapes[f"fpn.fpn_p{k}.weight"], shapes[f"fpn.fpn_p{k}.bias"] = (fpn_dim, fpn_dim, 3, 3), (
            fpn_dim,
        )
    if with_gap:
        shapes["fpn.fpn_gap.weight"], shapes["fpn.fpn_gap.bias"] = (fpn_dim, 2048), (fpn_dim,)
    shapes["rpn.conv_proposal.0.weight"], shapes["rpn.conv_proposal.0.bias"] = (
        fpn_dim,
        fpn_dim,
        3,
        3,
    ), (fpn_dim,)
    shapes["rpn.cls_score.weight"], shapes["rpn.cls_score.bias"] = (3, fpn_dim, 1, 1), (3,)
    shapes["rpn.bbox_pred.weight"], shapes["rpn.bbox_pred.bias"] = (12, fpn_dim, 1, 1), (12,)
    shapes["rcnn.fc6.0.weight"], shapes["rcnn.fc6.0.bias"] = (1024, 7 * 7 * fpn_dim), (1024,)
    shapes["rcnn.fc7.0.weight"], shapes["rcnn.fc7.0.bias"] = (1024, 1024), (1024,)
    shapes["rcnn.cls_score.weight"], shapes["rcnn.cls_score.bias"] = (things + 1, 1024), (
        things + 1,
    )
    shapes["rcnn.bbox_pred.weight"] = (4 * (things + 1), 1024)
    shapes["rcnn.bbox_pred.bias"] = (4 * (things + 1),)
    for k in range(1, 5):
        shapes[f"mask_branch.mask_conv{k}.0.weight"] = (256, fpn_dim if k == 1 else 256, 3, 3)
        shapes[f"mask_branch.mask_conv{k}.0.bias"] = (256,)
    shapes["mask_branch.mask_deconv1.0.weight"], shapes["mask_branch.mask_deconv1.0.bias"] = (
        256,
        256,
        2,
        2,
    ), (256,)
    shapes["mask_branch.mask_score.weight"], shapes["mask_branch.mask_score.bias"] = (
        things + 1,
        256,
        1,
        1,
    ), (things + 1,)
    # fcn_num_layers deformable layers: fpn_dim wide up to the last two, fpn_dim -> 128 -> 128.
    dims = [fpn_dim] * (fcn_layers - 1) + [128, 128]
    for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
        shapes[f"fcn_head.fcn_subnet.conv.{i}.0.conv_offset.weight"] = (18, c_in, 3, 3)
        shapes[f"fcn_head.fcn_subnet.conv.{i}.0.conv_offset.bias"] = (18,)
        shapes[f"fcn_head.fcn_subnet.conv.{i}.0.conv.weight"] = (c_out, c_in, 3, 3)
        shapes[f"fcn_head.fcn_subnet.conv.{i}.0.conv.bias"] = (c_out,)
    shapes["fcn_head.score.weight"], shapes["fcn_head.score.bias"] = (stuff + things, 512, 1, 1), (
        stuff + things,
    )
    return shapes


@pytest.mark.parametrize(
    "config, with_gap, fcn_layers",
    [("coco/upsnet_R_50_1x.yaml", True, 3), ("cityscapes/upsnet_R_50.yaml", False, 2)],
)
def test_official_upsnet_converts_exactly_into_the_official_configs(config, with_gap, fcn_layers):
    """The released COCO (fpn_with_gap, 3 semantic layers) and Cityscapes (2 layers) layouts
    fill the models of the project's configs with nothing left over; the outputs of the
    converted layers are checked against the official ones by tools/parity/upsnet.py and
    tests/modeling/upsnet/test_parity.py."""
    things, stuff, fpn_dim = 3, 2, 32
    semantic_dims = [fpn_dim] * (fcn_layers - 2) + [128, 128]
    cfg = _cfg(
        config, "MODEL.FPN.OUT_CHANNELS", fpn_dim,
        "MODEL.ROI_HEADS.NUM_CLASSES", things, "MODEL.UPSNET.NUM_STUFF_CLASSES", stuff,
        "MODEL.UPSNET.SEMANTIC_HEAD.CONV_DIMS", semantic_dims,
    )  # fmt: skip
    model = build_model(cfg)
    official = _randomized(official_upsnet_shapes(fpn_dim, things, stuff, with_gap, fcn_layers))

    conversion = convert_official_upsnet(official)
    assert conversion.unused == [] and conversion.notes == []  # exact
    verify_against_model(conversion, model)
    converted = conversion.state_dict
    if with_gap:
        assert torch.equal(
            converted["backbone.fpn_lateral5.global_pooling.weight"], official["fpn.fpn_gap.weight"]
        )
    # Background: first officially, last in detectron2 (scores); no background deltas or mask.
    cls_score = official["rcnn.cls_score.weight"]
    assert torch.equal(converted["roi_heads.box_predictor.cls_score.weight"][-1], cls_score[0])
    assert torch.equal(converted["roi_heads.box_predictor.cls_score.weight"][:-1], cls_score[1:])
    assert torch.equal(
        converted["roi_heads.box_predictor.bbox_pred.weight"], official["rcnn.bbox_pred.weight"][4:]
    )
    assert torch.equal(
        converted["roi_heads.mask_head.predictor.weight"],
        official["mask_branch.mask_score.weight"][1:],
    )
    assert torch.equal(converted["semantic_head.subnetwork.3.offset.weight"],
                       official["fcn_head.fcn_subnet.conv.1.0.conv_offset.weight"])  # fmt: skip
    assert f"semantic_head.subnetwork.{3 * fcn_layers}.weight" not in converted


def test_converters_reject_other_checkpoints():
    with pytest.raises(ConversionError, match="not an official UPSNet"):
        convert_official_upsnet({"backbone.x": torch.zeros(1)})
    with pytest.raises(ConversionError, match="not an official Panoptic FCN"):
        convert_official_panoptic_fcn({"backbone.x": torch.zeros(1)})
    conversion = convert_detectron2_panoptic_fpn({"backbone.x": torch.zeros(1)})
    with pytest.raises(ConversionError, match="does not fit the model"):
        verify_against_model(conversion, torch.nn.Linear(2, 2))
