"""optimize_for_cpu (folded batch norms, channels-last backbone, modules replaced by type) on
the four methods: the same features and outputs as the plain model up to float rounding."""

from __future__ import annotations

import copy
import logging
import sys

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model
from panoptic_testing import CONFIGS
from torch import nn

from panoptic_zoo.acceleration import optimize_for_cpu
from panoptic_zoo.acceleration.depthwise_conv import (
    OnnxRuntimeConv2d,
    use_onnxruntime_depthwise_convolutions,
)
from panoptic_zoo.acceleration.deform_conv import use_onnxruntime_deformable_convolutions
from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING
from panoptic_zoo.layers import DeformableConv3x3
from panoptic_zoo.acceleration.memory_format import (
    channels_last_backbone,
    nchw_contiguous,
    projection_only_features,
)
from panoptic_zoo.acceleration.norm_folding import fold_batch_norms
from panoptic_zoo.config import get_cfg
from panoptic_zoo.engine import build_inference_model, inference_copy, without_acceleration
from panoptic_zoo.utils.config import shrink_to_test_size

COCO_CONFIGS = [
    "panoptic_fpn_R_50_1x.yaml",
    "upsnet_R_50_1x.yaml",
    "panoptic_deeplab_R_52_DC5_dsconv_200k.yaml",
    "panoptic_fcn_R_50_1x.yaml",
]


def _test_config(config_name: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco" / config_name))
    shrink_to_test_size(cfg)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _unfolded_model(config_name: str) -> nn.Module:
    """The plain model in eval mode, as the trainer holds it (never optimized)."""
    torch.manual_seed(0)
    model = build_model(_test_config(config_name)).eval()
    # Statistics far from the identity, so a wrong fold cannot pass unnoticed.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                size = norm.running_mean.shape
                norm.running_mean.copy_(torch.randn(size, generator=generator) * 0.3)
                norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                norm.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                norm.bias.copy_(torch.randn(size, generator=generator) * 0.1)
    return model


def _assert_close_to_rounding(found: torch.Tensor, expected: torch.Tensor) -> None:
    # Random weights and statistics let activations grow to ~1e5: errors relative to the scale.
    scale = expected.abs().max().item()
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("config_name", COCO_CONFIGS)
def test_folded_model_computes_the_same(config_name):
    model = _unfolded_model(config_name)
    normed = {
        name: conv
        for name, conv in model.named_modules()
        if isinstance(conv, Conv2d) and isinstance(conv.norm, (FrozenBatchNorm2d, nn.BatchNorm2d))
    }
    folded = copy.deepcopy(model)
    assert fold_batch_norms(folded) == len(normed) > 0
    assert not any(isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)) for m in folded.modules())
    # Every folded convolution, fed what its unfolded twin saw in a real forward pass (heads
    # included), gives what the twin gave (copies: ResNet applies ReLU in place afterwards).
    seen = {}

    def record(name, args, out):
        seen[name] = ([a.clone() for a in args], out.clone())

    hooks = [
        conv.register_forward_hook(lambda m, args, out, name=name: record(name, args, out))
        for name, conv in normed.items()
    ]
    torch.manual_seed(2)
    images = torch.rand(2, 3, 97, 131) * 255  # odd sizes, batch 2
    with torch.inference_mode():
        model([{"image": image} for image in images])
        for hook in hooks:
            hook.remove()
        assert seen.keys() == normed.keys()
        folded_modules = dict(folded.named_modules())
        for name, (args, expected) in seen.items():
            _assert_close_to_rounding(folded_modules[name](*args), expected)
        # And the backbone as a whole, where 50 folded layers follow one another (on a size
        # every backbone takes unpadded).
        normalized = torch.randn(2, 3, 96, 128)
        expected, found = model.backbone(normalized), folded.backbone(normalized)
        assert expected.keys() == found.keys()
        for name in expected:
            _assert_close_to_rounding(found[name], expected[name])


def test_folding_is_refused_in_training_mode():
    model = nn.Sequential(Conv2d(3, 4, 3, norm=FrozenBatchNorm2d(4)))
    with pytest.raises(ValueError, match="model.eval"):
        fold_batch_norms(model)


@pytest.mark.parametrize("config_name", COCO_CONFIGS)
def test_channels_last_backbone_gives_the_same_contiguous_features(config_name):
    model = _unfolded_model(config_name)
    changed = copy.deepcopy(model)
    channels_last_backbone(changed, keep=projection_only_features(model))
    conv = next(m for m in changed.backbone.modules() if isinstance(m, Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    normalized = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        expected, found = model.backbone(normalized), changed.backbone(normalized)
    # The heads see NCHW, as before, except where all readers take either.
    kept = set(projection_only_features(model))
    assert kept == ({"res2", "res3"} if "panoptic_deeplab" in config_name else set())
    for name in expected:
        memory_format = torch.channels_last if name in kept else torch.contiguous_format
        assert found[name].is_contiguous(memory_format=memory_format)
        _assert_close_to_rounding(found[name], expected[name])


def test_channels_last_features_must_be_backbone_outputs():
    model = _unfolded_model(COCO_CONFIGS[0])
    with pytest.raises(ValueError, match=r"\['res9'\] are not backbone outputs"):
        channels_last_backbone(model, keep=("p2", "res9"))


@pytest.mark.parametrize(
    "layout",
    ["channels_last", "channels_last_batch_2", "one_pixel", "contiguous", "sliced", "float64"],
)
def test_nchw_contiguous_equals_contiguous(layout):
    generator = torch.Generator().manual_seed(0)
    batch = 2 if layout == "channels_last_batch_2" else 1
    size = (1, 1) if layout == "one_pixel" else (13, 7)
    x = torch.randn(batch, 256, *size, generator=generator)
    if layout == "float64":
        x = x.double()
    if layout != "contiguous":
        x = x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # neither layout is contiguous: the general path
        x = x[:, ::2]
    found = nchw_contiguous(x)
    assert found.is_contiguous() and found.dtype == x.dtype
    assert torch.equal(found, x.contiguous())
    # A tensor already contiguous comes back as it is (a 1x1 channels-last one is).
    assert (found.data_ptr() == x.data_ptr()) == (layout in ("contiguous", "one_pixel"))


def test_optimizations_follow_the_config():
    cfg = _test_config(COCO_CONFIGS[0])
    changed = build_inference_model(cfg, "")
    assert not changed.training and not any(
        isinstance(m, FrozenBatchNorm2d) for m in changed.modules()
    )
    assert changed.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert changed.cpu_optimizations == {
        "batch_norms_folded": 53, "channels_last_backbone": True,
        "depthwise_onnxruntime_convolutions": 0, "deformable_kernel_convolutions": 0,
        "deformable_onnxruntime_convolutions": 0, "class_map_kernels": True,
        "level_sum_predictors": 0, "upsampling_into_concat": 0,
    }  # fmt: skip
    # A second call leaves it as it is.
    assert optimize_for_cpu(changed, cfg) is changed.cpu_optimizations
    unchanged = build_inference_model(without_acceleration(cfg), "")
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in unchanged.modules()) == 53
    assert unchanged.backbone.bottom_up.stem.conv1.weight.is_contiguous()
    assert not any(unchanged.cpu_optimizations.values())
    # Off the CPU nothing is applied (checked without a GPU: only the config's device is read).
    cfg.defrost()
    cfg.MODEL.DEVICE = "cuda"
    assert not any(optimize_for_cpu(_unfolded_model(COCO_CONFIGS[0]), cfg).values())


# What optimize_for_cpu replaces in each method, and how many (test-size configs).
REPLACEMENTS = (
    "depthwise_onnxruntime_convolutions", "deformable_kernel_convolutions",
    "deformable_onnxruntime_convolutions", "level_sum_predictors", "upsampling_into_concat",
)  # fmt: skip
# The deformable layers: the C kernel's where it is built, else ONNX Runtime's.
DEFORMABLE = (
    "deformable_onnxruntime_convolutions" if DEFORM_SAMPLING is None
    else "deformable_kernel_convolutions"
)  # fmt: skip
REPLACED = {
    "panoptic_fpn_R_50_1x.yaml": {},
    "upsnet_R_50_1x.yaml": {DEFORMABLE: 3, "level_sum_predictors": 1},
    "panoptic_deeplab_R_52_DC5_dsconv_200k.yaml": {
        "depthwise_onnxruntime_convolutions": 12, "upsampling_into_concat": 2,
    },
    "panoptic_fcn_R_50_1x.yaml": {DEFORMABLE: 3},
}  # fmt: skip


ALMOST_SAME_IDS = ("upsnet_R_50_1x.yaml", "panoptic_fcn_R_50_1x.yaml")


@pytest.mark.parametrize("config_name", COCO_CONFIGS)
def test_optimized_model_gives_the_plain_models_outputs(config_name):
    """End to end, batch 2 of odd sizes: the optimized copy's outputs are the plain model's up to
    float rounding, and the plain model (as training holds it) is untouched."""
    cfg = _test_config(config_name)
    model = _unfolded_model(config_name)
    optimized = inference_copy(cfg, model)
    assert optimized is not model and not hasattr(model, "cpu_optimizations")
    assert inference_copy(cfg, optimized) is optimized
    replaced = {k: optimized.cpu_optimizations[k] for k in REPLACEMENTS}
    assert {k: v for k, v in replaced.items() if v} == REPLACED[config_name]
    torch.manual_seed(3)
    inputs = [{"image": torch.rand(3, 97, 131) * 255}, {"image": torch.rand(3, 83, 111) * 255}]
    with torch.inference_mode():
        expected, found = model(inputs), optimized(inputs)
    for plain, fast in zip(expected, found):
        # Random weights and statistics amplify rounding (activations up to ~1e5): in UPSNet,
        # the channels-last backbone alone moves semantic probabilities by ~3e-3.
        scale = plain["sem_seg"].abs().max().item()
        torch.testing.assert_close(fast["sem_seg"], plain["sem_seg"], rtol=0, atol=1e-2 * scale)
        same_ids = (fast["panoptic_seg"][0] == plain["panoptic_seg"][0]).float().mean().item()
        # Random Panoptic FCN and UPSNet: argmax and score ties that rounding breaks either way.
        assert same_ids == 1.0 or (config_name in ALMOST_SAME_IDS and same_ids > 0.97)


def test_panoptic_deeplab_depthwise_convolutions_run_by_onnxruntime():
    pytest.importorskip("onnxruntime")
    model = _unfolded_model("panoptic_deeplab_R_52_DC5_dsconv_200k.yaml")
    changed = copy.deepcopy(model)
    # Per branch (semantic, instance): three dilated 3x3 in ASPP, two 5x5 in the decoder's
    # fusions and one 5x5 in a head (semantic head; instance offset head).
    assert use_onnxruntime_depthwise_convolutions(changed) == 12
    replaced = [m for m in changed.modules() if isinstance(m, OnnxRuntimeConv2d)]
    assert sorted((m.kernel_size[0], m.dilation[0] > 1) for m in replaced) == (
        [(3, True)] * 6 + [(5, False)] * 6
    )
    assert changed.state_dict().keys() == model.state_dict().keys()
    torch.manual_seed(3)
    inputs = [{"image": torch.rand(3, 97, 131) * 255}]
    with torch.inference_mode():
        (expected,), (found,) = model(inputs), changed(inputs)
        features = model.backbone(torch.randn(1, 3, 96, 128))
        for name in ("sem_seg_head", "ins_embed_head"):
            outputs = [getattr(m, name)(features)[0] for m in (model, changed)]
            _assert_close_to_rounding(outputs[1], outputs[0])
    _assert_close_to_rounding(found["sem_seg"], expected["sem_seg"])


def test_without_onnxruntime_its_options_are_skipped_with_a_notice(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    cfg = _test_config("panoptic_deeplab_R_52_DC5_dsconv_200k.yaml")
    with caplog.at_level(logging.INFO, logger="panoptic_zoo.acceleration.optimize"):
        changes = optimize_for_cpu(_unfolded_model("upsnet_R_50_1x.yaml"), cfg)
    assert changes["deformable_onnxruntime_convolutions"] == 0
    notices = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert notices == [
        f"ACCELERATION.CPU.{option} skipped: onnxruntime is not installed "
        "(scripts/setup.sh --extra deploy)"
        for option in ("DEPTHWISE_ONNXRUNTIME", "DEFORMABLE_ONNXRUNTIME")
    ]
    model = _unfolded_model("panoptic_deeplab_R_52_DC5_dsconv_200k.yaml")
    changes = optimize_for_cpu(model, cfg)
    assert changes["depthwise_onnxruntime_convolutions"] == 0
    assert not any(hasattr(m, "onnxruntime_node") for m in model.modules())


@pytest.mark.skipif(DEFORM_SAMPLING is None, reason="the C kernel is not built")
def test_deformable_layers_run_by_the_c_kernel_else_by_onnxruntime():
    """The C kernel takes every deformable layer; with DEFORMABLE_KERNEL off, ONNX Runtime does."""
    pytest.importorskip("onnxruntime")
    cfg = _test_config("upsnet_R_50_1x.yaml")
    changes = optimize_for_cpu(_unfolded_model("upsnet_R_50_1x.yaml"), cfg)
    counts = ("deformable_kernel_convolutions", "deformable_onnxruntime_convolutions")
    assert [changes[k] for k in counts] == [3, 0]
    cfg.defrost()
    cfg.ACCELERATION.CPU.DEFORMABLE_KERNEL = False
    changes = optimize_for_cpu(_unfolded_model("upsnet_R_50_1x.yaml"), cfg)
    assert [changes[k] for k in counts] == [0, 3]


def test_onnxruntime_layers_never_train():
    """Gradients go through the plain layers' ops: the same gradients as the plain model's."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    plain = nn.Sequential(
        DeformableConv3x3(3, 4, modulated=True), Conv2d(4, 4, 5, padding=2, groups=4)
    )
    nn.init.normal_(plain[0].offset.weight, std=0.5)
    optimized = copy.deepcopy(plain)
    assert use_onnxruntime_deformable_convolutions(optimized) == 1
    assert use_onnxruntime_depthwise_convolutions(optimized) == 1
    x = torch.randn(2, 3, 9, 7)
    for model in (plain, optimized):
        model.train()
        model(x).square().sum().backward()
    for expected, found in zip(plain.parameters(), optimized.parameters()):
        torch.testing.assert_close(found.grad, expected.grad)
