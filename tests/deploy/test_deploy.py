"""
panoptic_zoo.deploy: each method's network exported to TorchScript and to ONNX (dynamic sizes),
run by ``load`` (TorchScript; ONNX Runtime's CPU provider), post-processed by the eager model's
own code: the panoptic output of tiny shapes images (odd sizes) equal to the eager model's.
Untrained models with their score thresholds at 0, so that every method gives thing and stuff
segments to compare.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from panoptic_testing import CONFIGS, REPO, distinct_untrained_queries, shrunk_shapes_cfg

from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING
from panoptic_zoo.data import build_dataset_mapper
from panoptic_zoo.deploy import DeployNetwork, eager_part_path, export_network, load
from panoptic_zoo.deploy.check import check_deployed
from panoptic_zoo.deploy.export import export_config, network_input, traced_size_range
from panoptic_zoo.engine import build_inference_model
from panoptic_zoo.layers import DeformableConv3x3

# Every candidate kept (up to 10 detections), no area limit: post-processing has things and
# stuff to merge.
ALL_CANDIDATES = {
    "panoptic_fpn_R_18.yaml": [
        "TEST.DETECTIONS_PER_IMAGE", 10,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.0,
        "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", 0,
    ],
    "upsnet_R_18.yaml": [
        "TEST.DETECTIONS_PER_IMAGE", 10,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "MODEL.UPSNET.INFERENCE.SCORE_THRESH", 0.0,
        "MODEL.UPSNET.INFERENCE.STUFF_AREA_LIMIT", 0,
    ],
    "panoptic_deeplab_R_18.yaml": [
        "MODEL.PANOPTIC_DEEPLAB.STUFF_AREA", 0,
        "MODEL.PANOPTIC_DEEPLAB.CENTER_THRESHOLD", 0.0,
        "MODEL.PANOPTIC_DEEPLAB.TOP_K_INSTANCE", 16,
    ],
    "panoptic_fcn_R_18.yaml": [
        "MODEL.PANOPTIC_FCN.INFERENCE.THING_SCORE_THRESH", 0.0,
        "MODEL.PANOPTIC_FCN.INFERENCE.STUFF_SCORE_THRESH", 0.0,
        "MODEL.PANOPTIC_FCN.INFERENCE.INSTANCE_SCORE_THRESH", 0.0,
        "MODEL.PANOPTIC_FCN.INFERENCE.STUFF_AREA_LIMIT", 0,
    ],
    # Every query kept; one encoder layer and three decoder layers (one per scale read) keep
    # the export small.
    "mask2former_R_18.yaml": [
        "MODEL.MASK2FORMER.INFERENCE.OBJECT_MASK_THRESHOLD", 0.0,
        "MODEL.MASK2FORMER.INFERENCE.OVERLAP_THRESHOLD", 0.0,
        "MODEL.MASK2FORMER.PIXEL_DECODER.ENCODER_LAYERS", 1,
        "MODEL.MASK2FORMER.DECODER.LAYERS", 3,
    ],
}  # fmt: skip
LARGER_SIZE = (101, 131)
DISTINCT_PREDICTORS = {
    "panoptic_deeplab_R_18.yaml": ["ins_embed_head.center_predictor"],
    "panoptic_fcn_R_18.yaml": [
        f"kernel_generator.{name}"
        for name in ("thing_scores", "stuff_scores", "thing_embed", "stuff_embed")
    ],
}
ADJUST_UNTRAINED = {"mask2former_R_18.yaml": distinct_untrained_queries}


def _resized(inputs: dict, size: tuple[int, int]) -> dict:
    """A model input with its image resized (bilinear) to ``size``, and its output size too."""
    image = F.interpolate(inputs["image"][None].float(), size=size, mode="bilinear")[0]
    return {**inputs, "image": image.round().to(inputs["image"].dtype), "height": size[0],
            "width": size[1]}  # fmt: skip


def _model_and_inputs(config_name, format, tiny_shapes, tmp_path, opts=()):
    cfg = shrunk_shapes_cfg(config_name, tiny_shapes, tmp_path)
    # The images at their own, odd sizes (no test-time resizing).
    cfg.merge_from_list(
        ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 0, *ALL_CANDIDATES[config_name], *opts]
    )
    cfg = export_config(cfg, format)
    torch.manual_seed(0)
    model = build_inference_model(cfg, "")
    with torch.no_grad():
        # Initialized to std 0.001-0.01, untrained scores and kernels are flat to ~1e-7, where
        # any float rounding reorders candidates: distinct ones, as trained heads give. Offsets
        # of deformable convolutions (initialized to 0) of a few pixels.
        for name in DISTINCT_PREDICTORS.get(config_name, ()):
            model.get_submodule(name).weight.normal_(0, 1)
        for module in model.modules():
            if isinstance(module, DeformableConv3x3):
                module.offset.weight.normal_(0, 0.1)
    if config_name in ADJUST_UNTRAINED:
        ADJUST_UNTRAINED[config_name](model)
    mapper = build_dataset_mapper(cfg, is_train=False)
    inputs = [mapper(record) for record in DatasetCatalog.get(tiny_shapes["val"])[:2]]
    # The second image enlarged to another odd size, which pads to another batch size.
    inputs[1] = _resized(inputs[1], LARGER_SIZE)
    return cfg, model, inputs


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("config_name", sorted(ALL_CANDIDATES))
def test_exported_panoptic_output_is_the_eager_one(config_name, format, tiny_shapes, tmp_path):
    cfg, model, inputs = _model_and_inputs(config_name, format, tiny_shapes, tmp_path)
    # Traced on the first image (75x96, padded to 96x96), run on it and on a 101x131 one, one
    # by one and as one batch of both.
    example = network_input(model, inputs[:1])
    assert example.shape[-2:] != network_input(model, inputs[1:]).shape[-2:]
    path = export_network(model, cfg, example, tmp_path / f"net.{format}", format, dynamic=True)
    deployed = load(path)
    assert deployed.backend == {"onnx": "onnxruntime", "torchscript": "torchscript"}[format]
    # Every weight of a module the exported network does not call is the model's own in the
    # deployed model: Panoptic FCN's post-processing reads its stuff embedding, a layer of an
    # exported head that the network never calls (left at its initialization until mended).
    network_modules = set(torch.load(eager_part_path(path), weights_only=True)["network_modules"])
    assert any(m.startswith("backbone.") for m in network_modules)
    if config_name == "panoptic_fcn_R_18.yaml":
        assert "kernel_generator.stuff_embed" not in network_modules
    deployed_state = deployed.model.state_dict()
    for name, value in model.state_dict().items():
        if name.rpartition(".")[0] not in network_modules:
            assert torch.equal(deployed_state[name], value), name
    reports = check_deployed(model, deployed, inputs)
    batch_reports = check_deployed(model, deployed, inputs, batch_size=2)
    assert [r["batch"] for r in reports + batch_reports] == [1, 1, 2, 2]
    assert [r["size"] for r in batch_reports] == [r["size"] for r in reports]
    reports += batch_reports
    assert all(r["segments"] > 0 for r in reports)
    assert all(r["pixel_agreement"] >= 0.999 and r["same_segments"] for r in reports)
    if "instances" in reports[0]:
        assert sum(r["instances"] for r in reports) > 0
    deformable = any(isinstance(m, DeformableConv3x3) for m in model.modules())
    if format == "torchscript" or not deformable:
        assert deployed.deformable is None
        if format == "torchscript" and deformable:
            with pytest.raises(ValueError, match="deformable_kernel is for ONNX exports"):
                load(path, deformable_kernel=False)
    elif DEFORM_SAMPLING is not None:
        # The C kernel between ONNX Runtime sessions; ONNX Runtime's DeformConv on request.
        assert deployed.deformable == "C kernel" and len(deployed.session._stages) > 1
        deform_conv = load(path, deformable_kernel=False)
        assert deform_conv.deformable == "DeformConv"
        reports = check_deployed(model, deform_conv, inputs, batch_size=2)
        assert all(r["pixel_agreement"] >= 0.999 and r["same_segments"] for r in reports)
    else:
        assert deployed.deformable == "DeformConv"
        with pytest.raises(ValueError, match="deformable_kernel=True needs the deformable C"):
            load(path, deformable_kernel=True)


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_dynamic_export_above_the_image_pooling_window(format, tiny_shapes, tmp_path):
    """
    Panoptic-DeepLab's ASPP pools over a window of the training crop (here 64x96: 2x3 cells
    of res5 at stride 32). Traced on a 96x128 padded batch (3x4 cells, above the window): the
    eager output on a 128x160 batch (4x5 cells), one by one and as a batch of 2; the sizes the
    trace cannot hold (a side under the window, where eager pools the whole side) refused.
    """
    cfg, model, inputs = _model_and_inputs("panoptic_deeplab_R_18.yaml", format, tiny_shapes,
                                           tmp_path, ["INPUT.CROP.ENABLED", True,
                                           "INPUT.CROP.TYPE", "absolute",
                                           "INPUT.CROP.SIZE", (64, 96)])  # fmt: skip
    example = network_input(model, [_resized(inputs[0], (90, 101))])
    assert tuple(example.shape[-2:]) == (96, 128)
    path = export_network(model, cfg, example, tmp_path / f"net.{format}", format, dynamic=True)
    deployed = load(path)
    assert deployed.padded_size_range == [[33, None], [65, None]]
    larger = [_resized(inputs[0], (101, 131)), _resized(inputs[1], (111, 157))]
    assert {tuple(network_input(model, [x]).shape[-2:]) for x in larger} == {(128, 160)}
    reports = check_deployed(model, deployed, larger) + check_deployed(model, deployed, larger, 2)
    assert all(r["pixel_agreement"] >= 0.999 and r["same_segments"] for r in reports)
    with pytest.raises(ValueError, match="padded images of width 65 to any, got 64"):
        deployed([_resized(inputs[0], (75, 61))])
    # The other branches, by hand: within the window on both sides (the global mean); above it
    # on one side, under it on the other (that side keeps its 2 cells).
    assert traced_size_range(model, torch.randn(1, 3, 64, 96)) == [[1, 64], [1, 96]]
    assert traced_size_range(model, torch.randn(1, 3, 96, 64)) == [[33, None], [33, 64]]


@pytest.mark.parametrize("config_name", ["panoptic_fpn_R_18.yaml", "upsnet_R_18.yaml"])
def test_fixed_size_export_names_its_shape(config_name, tiny_shapes, tmp_path):
    """Also UPSNet's with its shapes fixed (Resize sizes as constants) on the C kernel."""
    cfg, model, inputs = _model_and_inputs(config_name, "onnx", tiny_shapes, tmp_path)
    example = network_input(model, inputs[:1])
    deployed = load(export_network(model, cfg, example, tmp_path / "net.onnx", "onnx"))
    (report,) = check_deployed(model, deployed, inputs[:1])
    assert report["segments"] > 0 and report["pixel_agreement"] >= 0.999 and report["same_segments"]
    with pytest.raises(ValueError, match=r"takes padded batches of shape .* --dynamic"):
        deployed([inputs[1]])


def test_network_input_is_the_models_padded_batch(tiny_shapes, tmp_path):
    # Panoptic FPN pads a batch as a whole (Panoptic FCN runs each padded size apart).
    _, model, inputs = _model_and_inputs("panoptic_fpn_R_18.yaml", "onnx", tiny_shapes, tmp_path)
    images = network_input(model, inputs[:2])
    stride = model.backbone.size_divisibility
    height = max(x["image"].shape[1] for x in inputs[:2])
    assert images.shape[:2] == (2, 3) and images.shape[2] == -(-height // stride) * stride
    # Zero padding after normalization; the first pixel normalized by hand.
    expected = (inputs[0]["image"][:, 0, 0] - model.pixel_mean[:, 0, 0]) / model.pixel_std[:, 0, 0]
    torch.testing.assert_close(images[0, :, 0, 0], expected)
    assert images[0, :, -1, -1].abs().max() == 0


def test_unknown_meta_architecture_and_missing_eager_part(tmp_path):
    with pytest.raises(ValueError, match="no deployment seam for meta-architecture Linear"):
        DeployNetwork(torch.nn.Linear(2, 2))
    (tmp_path / "net.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=str(eager_part_path(tmp_path / "net.onnx"))):
        load(tmp_path / "net.onnx")


spec = importlib.util.spec_from_file_location("export_model", REPO / "tools" / "export_model.py")
export_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_model)


def test_export_tool_checks_its_export(tiny_shapes, tmp_path, capsys):
    """A fixed-size TorchScript export: the second check image is resized to the first's size."""
    files = [r["file_name"] for r in DatasetCatalog.get(tiny_shapes["val"])[:2]]
    output = tmp_path / "panoptic_fpn.ts"
    argv = ["--config-file", str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml"),
            "--format", "torchscript", "--output", str(output), "--check-images", *files,
            "--opts", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "72"]  # fmt: skip
    assert export_model.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("% of pixels and all") == 2 and "exported PanopticFPN's network" in printed
    assert output.is_file() and eager_part_path(output).is_file()
    assert load(output).input_shape == [1, 3, 96, 96]


@pytest.mark.skipif(DEFORM_SAMPLING is None, reason="the C kernel is not built")
def test_export_tool_checks_both_deformable_paths(tiny_shapes, tmp_path, capsys):
    """A dynamic ONNX export of UPSNet, checked as load runs it (the C kernel between ONNX
    Runtime sessions) and as other runtimes do (ONNX Runtime's DeformConv)."""
    files = [r["file_name"] for r in DatasetCatalog.get(tiny_shapes["val"])[:2]]
    argv = ["--config-file", str(CONFIGS / "shapes" / "upsnet_R_18.yaml"), "--format", "onnx",
            "--dynamic", "--output", str(tmp_path / "upsnet.onnx"), "--check-images", *files,
            "--opts", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "72"]  # fmt: skip
    assert export_model.main(argv) == 0
    printed = capsys.readouterr().out
    # Two images one by one and as one batch (a report per image), each way.
    assert printed.count("onnxruntime, deformable convolutions on C kernel)") == 4
    assert printed.count("onnxruntime, deformable convolutions on DeformConv)") == 4


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_deformable_convolution_runs_as_onnx_deform_conv(tmp_path, modulated, bias):
    """The deformable layer exported as ONNX DeformConv, run by ONNX Runtime's CPU kernel, with
    offsets of several pixels: torchvision's result. Also a 1-step ``linspace`` (a 1x1 map)."""
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    conv = DeformableConv3x3(5, 7, bias=bias, modulated=modulated).eval()
    with torch.no_grad():
        conv.offset.weight.normal_(0, 1)

    class ConvAndCoordinates(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x), torch.linspace(-1, 1, x.shape[-1] - 10)

    x = torch.randn(2, 5, 9, 11)
    path = tmp_path / "conv.onnx"
    with torch.no_grad():
        expected = conv(x)
        torch.onnx.export(ConvAndCoordinates(), (x,), str(path), dynamo=False, opset_version=19)
    assert "DeformConv" in {node.op_type for node in onnx.load(str(path)).graph.node}
    assert expected.abs().max() > 0 and conv.offset(x).abs().max() > 2  # several pixels
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got, coordinates = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)
    assert coordinates.tolist() == [-1.0]


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_exports_hold_no_onnxruntime_sessions(format, tiny_shapes, tmp_path):
    """export_config leaves out the layers that run ONNX Runtime sessions or the deformable C
    kernel (the CPU inference paths of deformable and depthwise convolutions); export_network
    refuses a model that holds them."""
    pytest.importorskip("onnxruntime")
    cfg, model, inputs = _model_and_inputs("upsnet_R_18.yaml", format, tiny_shapes, tmp_path)
    assert not cfg.ACCELERATION.CPU.DEFORMABLE_KERNEL
    assert not cfg.ACCELERATION.CPU.DEFORMABLE_ONNXRUNTIME
    assert not cfg.ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME
    assert any(type(m) is DeformableConv3x3 for m in model.modules())
    assert not any(hasattr(m, "onnxruntime_node") for m in model.modules())
    held = shrunk_shapes_cfg("upsnet_R_18.yaml", tiny_shapes, tmp_path)
    held.merge_from_list(["MODEL.WEIGHTS", ""])
    held.MODEL.DEVICE = "cpu"
    # The deformable layers by ONNX Runtime, then (where it is built) by the C kernel.
    for use_c_kernel, layer in [(False, "OnnxRuntimeDeformableConv3x3")] + (
        [] if DEFORM_SAMPLING is None else [(True, "SampledDeformableConv3x3")]
    ):
        held.ACCELERATION.CPU.DEFORMABLE_KERNEL = use_c_kernel
        held_model = build_inference_model(held, "")
        assert any(type(m).__name__ == layer for m in held_model.modules())
        with pytest.raises(ValueError, match=f"{layer}.*export_config"):
            export_network(
                held_model, held, network_input(held_model, inputs), tmp_path / "network", format
            )
