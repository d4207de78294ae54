"""
The patched Detectron2 v0.6 build (third_party/detectron2): each test exercises what one of the
patches in third_party/detectron2/patches changes, so that a patch that stops applying, is
dropped or regresses shows up here rather than deep inside a training run.

Tests of behaviour that only the patched, pure-Python build has (no ``detectron2._C``) are marked
``patched_detectron2`` (tests/third_party/conftest.py) and skip when an upstream source build with
compiled ops is installed instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def catalog_name():
    """A unique dataset name, removed from both catalogs afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = f"_test_detectron2_build_{uuid.uuid4().hex[:8]}"
    yield name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


# --------------------------------------------------------------------------------------------
# The build itself: every patched module imports, the model zoo configs ship in the wheel and
# the package is an ordinary installed distribution.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.layers",
        "detectron2.modeling",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.data",
        "detectron2.export",
        # Upstream's model zoo imports pkg_resources, which setuptools >= 82 no longer has.
        pytest.param("detectron2.model_zoo", marks=pytest.mark.patched_detectron2),
        "detectron2.projects.panoptic_deeplab",
        "detectron2.projects.deeplab",
    ],
)
def test_module_imports(module):
    assert importlib.import_module(module).__name__ == module


@pytest.mark.patched_detectron2
def test_model_zoo_config_file_is_packaged():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    assert os.path.isfile(path)
    # The config and the _BASE_ it names load (importlib.resources instead of pkg_resources).
    cfg = model_zoo.get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    with pytest.raises(RuntimeError, match="not available in Model Zoo"):
        model_zoo.get_config_file("COCO-PanopticSegmentation/no_such_config.yaml")


@pytest.mark.patched_detectron2
def test_installed_as_patched_distribution():
    import detectron2

    recipe = Path(__file__).resolve().parents[2] / "third_party" / "detectron2" / "pyproject.toml"
    with open(recipe, "rb") as f:
        recipe_version = tomllib.load(f)["project"]["version"]  # "0.6+panopticzoo.N"
    assert recipe_version.startswith("0.6+panopticzoo.")

    dist = importlib.metadata.distribution("pb1-detectron2")
    assert dist.metadata["Name"] == "pb1-detectron2"
    # The installed build is the recipe's current one (a bumped recipe needs `uv sync`).
    assert importlib.metadata.version("pb1-detectron2") == recipe_version
    files = {str(f) for f in dist.files}
    assert "detectron2/__init__.py" in files
    assert "detectron2/_compiled_ops.py" in files
    assert (
        "detectron2/model_zoo/configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml" in files
    )
    assert dist.read_text("RECORD")
    # The detectron2 that is imported is the one this distribution installed.
    assert Path(dist.locate_file("detectron2/__init__.py")).samefile(detectron2.__file__)


# --------------------------------------------------------------------------------------------
# Patch 0002: deformable convolution through torchvision.ops.deform_conv2d (CPU and autograd).
# --------------------------------------------------------------------------------------------

# (in_channels, out_channels, stride, padding, dilation, groups, deformable_groups)
CONV_CASES = [
    pytest.param(5, 4, 1, 1, 1, 1, 1, id="stride1"),
    pytest.param(5, 4, 2, 1, 2, 1, 1, id="stride2-dilation2"),
    pytest.param(6, 4, 1, 1, 1, 2, 2, id="groups2-deformable_groups2"),
]


def _conv_out_size(size, stride, padding, dilation, kernel=3):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@pytest.mark.patched_detectron2
@pytest.mark.parametrize("cin, cout, stride, padding, dilation, groups, dgroups", CONV_CASES)
def test_deform_conv_with_zero_offset_is_conv2d(
    cin, cout, stride, padding, dilation, groups, dgroups
):
    from detectron2.layers import DeformConv

    torch.manual_seed(0)
    layer = DeformConv(
        cin,
        cout,
        3,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        deformable_groups=dgroups,
    ).double()
    x = torch.randn(2, cin, 13, 17, dtype=torch.float64, requires_grad=True)
    h, w = (_conv_out_size(s, stride, padding, dilation) for s in (13, 17))
    offset = torch.zeros(2, 2 * 9 * dgroups, h, w, dtype=torch.float64, requires_grad=True)
    out = layer(x, offset)

    x_ref = x.detach().clone().requires_grad_()
    w_ref = layer.weight.detach().clone().requires_grad_()
    ref = F.conv2d(x_ref, w_ref, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert out.shape == ref.shape == (2, cout, h, w)
    assert torch.allclose(out, ref)

    grad_out = torch.randn_like(ref)
    (out * grad_out).sum().backward()
    (ref * grad_out).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad)
    assert torch.allclose(layer.weight.grad, w_ref.grad)
    assert offset.grad is not None and offset.grad.shape == offset.shape


@pytest.mark.patched_detectron2
@pytest.mark.parametrize("cin, cout, stride, padding, dilation, groups, dgroups", CONV_CASES)
def test_modulated_deform_conv_with_zero_offset_and_unit_mask_is_conv2d(
    cin, cout, stride, padding, dilation, groups, dgroups
):
    from detectron2.layers import ModulatedDeformConv

    torch.manual_seed(1)
    layer = ModulatedDeformConv(
        cin,
        cout,
        3,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        deformable_groups=dgroups,
        bias=True,
    ).double()
    with torch.no_grad():
        layer.bias.normal_()  # initialised to 0, which would hide a dropped bias
    x = torch.randn(2, cin, 13, 17, dtype=torch.float64, requires_grad=True)
    h, w = (_conv_out_size(s, stride, padding, dilation) for s in (13, 17))
    offset = torch.zeros(2, 2 * 9 * dgroups, h, w, dtype=torch.float64)
    mask = torch.ones(2, 9 * dgroups, h, w, dtype=torch.float64)
    out = layer(x, offset, mask)

    x_ref = x.detach().clone().requires_grad_()
    w_ref = layer.weight.detach().clone().requires_grad_()
    b_ref = layer.bias.detach().clone().requires_grad_()
    ref = F.conv2d(
        x_ref, w_ref, b_ref, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    assert out.shape == ref.shape == (2, cout, h, w)
    assert torch.allclose(out, ref)

    grad_out = torch.randn_like(ref)
    (out * grad_out).sum().backward()
    (ref * grad_out).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad)
    assert torch.allclose(layer.weight.grad, w_ref.grad)
    assert torch.allclose(layer.bias.grad, b_ref.grad)

    # The mask scales each sampled value: a mask of 0.5 halves the convolution (not the bias).
    with torch.no_grad():
        half = layer(x, offset, torch.full_like(mask, 0.5))
        bias = layer.bias.view(1, -1, 1, 1)
        assert torch.allclose(half - bias, 0.5 * (ref - bias))


@pytest.mark.patched_detectron2
def test_deform_conv_integer_offset_is_conv_of_shifted_input():
    from detectron2.layers import DeformConv

    torch.manual_seed(2)
    layer = DeformConv(5, 4, 3, padding=1).double()
    x = torch.randn(2, 5, 13, 17, dtype=torch.float64)
    weight = layer.weight.detach()
    with torch.no_grad():
        unshifted = layer(x, torch.zeros(2, 18, 13, 17, dtype=torch.float64))

        # Offsets are (dy, dx) pairs per kernel tap: +1 in x samples x[..., i, j + 1] where a
        # plain conv samples x[..., i, j]; beyond the right edge the sample is 0, like padding.
        offset_x = torch.zeros(2, 18, 13, 17, dtype=torch.float64)
        offset_x[:, 1::2] = 1.0
        shifted_x = layer(x, offset_x)
        # Exact everywhere: a conv (no padding) of x padded by 0 left, 2 right, 1 top, 1 bottom.
        assert torch.allclose(shifted_x, F.conv2d(F.pad(x, (0, 2, 1, 1)), weight))
        # Hand check on interior columns (those that neither wrap nor touch the padding).
        rolled = F.conv2d(torch.roll(x, shifts=-1, dims=-1), weight, padding=1)
        assert torch.allclose(shifted_x[..., 1:-2], rolled[..., 1:-2])
        assert not torch.allclose(shifted_x[..., 1:-2], unshifted[..., 1:-2])

        offset_y = torch.zeros(2, 18, 13, 17, dtype=torch.float64)
        offset_y[:, 0::2] = 1.0
        shifted_y = layer(x, offset_y)
        assert torch.allclose(shifted_y, F.conv2d(F.pad(x, (1, 1, 0, 2)), weight))


@pytest.mark.patched_detectron2
def test_deform_conv_rejects_group_mismatch():
    from detectron2.layers import DeformConv, ModulatedDeformConv
    from detectron2.layers.deform_conv import deform_conv, modulated_deform_conv

    x = torch.randn(1, 4, 6, 6)
    offset_dg1 = torch.zeros(1, 18, 6, 6)
    mask_dg1 = torch.ones(1, 9, 6, 6)

    # offset has the channels of deformable_groups=1, the layer asks for 2
    with pytest.raises(ValueError, match="deformable_groups"):
        DeformConv(4, 4, 3, padding=1, deformable_groups=2)(x, offset_dg1)
    with pytest.raises(ValueError, match="deformable_groups"):
        ModulatedDeformConv(4, 4, 3, padding=1, deformable_groups=2)(x, offset_dg1, mask_dg1)

    # weight is shaped for groups=1, the call says groups=2
    weight = torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match="groups"):
        deform_conv(x, offset_dg1, weight, 1, 1, 1, 2, 1)
    with pytest.raises(ValueError, match="groups"):
        modulated_deform_conv(x, offset_dg1, mask_dg1, weight, None, 1, 1, 1, 2, 1)
    # ...and with groups=1 the same tensors are accepted
    assert deform_conv(x, offset_dg1, weight, 1, 1, 1, 1, 1).shape == (1, 4, 6, 6)


@pytest.mark.patched_detectron2
def test_deform_conv_gradcheck():
    from detectron2.layers.deform_conv import deform_conv, modulated_deform_conv

    gen = torch.Generator().manual_seed(3)

    def rand(*shape, scale=1.0):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale

    x = rand(1, 2, 4, 5).requires_grad_()
    weight = rand(3, 2, 3, 3).requires_grad_()
    # fractional offsets, so that bilinear sampling is differentiable at every point
    offset = rand(1, 18, 4, 5, scale=1.4).requires_grad_()
    # fast_mode compares random projections of the Jacobians (the full Jacobian takes seconds)
    assert torch.autograd.gradcheck(
        lambda i, o, w: deform_conv(i, o, w, 1, 1, 1, 1, 1), (x, offset, weight), fast_mode=True
    )

    mask = torch.rand(1, 9, 4, 5, generator=gen, dtype=torch.float64).requires_grad_()
    bias = rand(3).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda i, o, m, w, b: modulated_deform_conv(i, o, m, w, b, 1, 1, 1, 1, 1),
        (x, offset, mask, weight, bias),
        fast_mode=True,
    )


# --------------------------------------------------------------------------------------------
# Patch 0002: ops that only detectron2._C has fail with a clear error at the point of use.
# --------------------------------------------------------------------------------------------


@pytest.mark.patched_detectron2
def test_rotated_box_iou_raises_clear_error():
    from detectron2 import structures
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0]])
    with pytest.raises(NotImplementedError, match="box_iou_rotated"):
        pairwise_iou_rotated(boxes, boxes)
    rotated = structures.RotatedBoxes(boxes)
    with pytest.raises(NotImplementedError, match="box_iou_rotated"):
        structures.pairwise_iou_rotated(rotated, rotated)


@pytest.mark.patched_detectron2
def test_roi_align_rotated_raises_clear_error():
    from detectron2.layers import ROIAlignRotated

    pooler = ROIAlignRotated(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=0)
    features = torch.randn(1, 3, 8, 8)
    rois = torch.tensor([[0.0, 4.0, 4.0, 4.0, 2.0, 30.0]])  # batch index, cx, cy, w, h, angle
    with pytest.raises(NotImplementedError, match="roi_align_rotated_forward"):
        pooler(features, rois)


@pytest.mark.patched_detectron2
def test_nms_rotated_raises_clear_error():
    from detectron2.layers import nms_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 2.0, 30.0], [5.0, 5.0, 4.0, 2.0, 35.0]])
    with pytest.raises(NotImplementedError, match="nms_rotated"):
        nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5)


# --------------------------------------------------------------------------------------------
# Patch 0002: COCO AP through pycocotools' COCOeval when the fast C++ COCOeval is missing.
# --------------------------------------------------------------------------------------------

COCO_CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
# image_id -> [(category_id, [x, y, w, h])]
COCO_BOXES = {
    1: [(1, [2.0, 3.0, 20.0, 15.0]), (2, [30.0, 10.0, 25.0, 30.0])],
    2: [(1, [5.0, 5.0, 40.0, 30.0]), (1, [50.0, 2.0, 10.0, 12.0]), (2, [8.0, 20.0, 16.0, 16.0])],
}


def _write_coco_gt(tmp_path: Path) -> Path:
    annotations = []
    for image_id, boxes in COCO_BOXES.items():
        for category_id, bbox in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    gt = {
        "images": [
            {"id": i, "width": 64, "height": 48, "file_name": f"{i}.jpg"} for i in COCO_BOXES
        ],
        "annotations": annotations,
        "categories": COCO_CATEGORIES,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.mark.patched_detectron2
def test_coco_bbox_ap_without_fast_impl(tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO

    from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(_write_coco_gt(tmp_path)))
        results = [
            {"image_id": i, "category_id": c, "bbox": b, "score": 1.0}
            for i, boxes in COCO_BOXES.items()
            for c, b in boxes
        ]
        # use_fast_impl=True asks for the C++ COCOeval; without _C this must fall back.
        coco_eval = _evaluate_predictions_on_coco(coco_gt, results, "bbox", use_fast_impl=True)
        assert coco_eval.stats[0] == 1.0

        # One box moved off its object: no longer a perfect score.
        results[0] = dict(results[0], bbox=[40.0, 30.0, 20.0, 15.0])
        coco_eval = _evaluate_predictions_on_coco(coco_gt, results, "bbox", use_fast_impl=True)
        assert 0.0 < coco_eval.stats[0] < 1.0


def test_coco_evaluator_end_to_end(tmp_path, catalog_name, compiled_detectron2):
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    register_coco_instances(catalog_name, {}, str(_write_coco_gt(tmp_path)), str(tmp_path))
    DatasetCatalog.get(catalog_name)  # fills thing_classes and the category id mapping

    evaluator = COCOEvaluator(
        catalog_name, tasks=("bbox",), distributed=False, output_dir=None, use_fast_impl=True
    )
    assert evaluator._use_fast_impl is compiled_detectron2
    evaluator.reset()
    for image_id, boxes in COCO_BOXES.items():
        instances = Instances((48, 64))
        instances.pred_boxes = Boxes(
            torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in boxes])
        )
        instances.scores = torch.ones(len(boxes))
        instances.pred_classes = torch.tensor([c - 1 for c, _ in boxes])
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP-cat"] == pytest.approx(100.0)
    assert results["bbox"]["AP-dog"] == pytest.approx(100.0)


# --------------------------------------------------------------------------------------------
# Patches 0003 and 0004: Pillow >= 10 and NumPy 2.
# --------------------------------------------------------------------------------------------


def test_polygon_and_bitmask_structures():
    from detectron2.structures import BitMasks, PolygonMasks, polygons_to_bitmask

    square = np.array([1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0])  # a 4x4 square
    triangle = np.array([0.0, 0.0, 6.0, 0.0, 0.0, 6.0])  # area 18

    bitmask = polygons_to_bitmask([square], 8, 10)
    assert bitmask.dtype == bool and bitmask.shape == (8, 10)
    assert bitmask.sum() == 16 and bitmask[1:5, 1:5].all()
    empty = polygons_to_bitmask([], 8, 10)
    assert empty.dtype == bool and not empty.any()

    polygons = PolygonMasks([[square], [triangle]])
    assert polygons.area().tolist() == [16.0, 18.0]
    nonempty = polygons.nonempty()
    assert nonempty.dtype == torch.bool and nonempty.tolist() == [True, True]

    bitmasks = BitMasks.from_polygon_masks(polygons, 8, 10)
    assert bitmasks.tensor.dtype == torch.bool and bitmasks.tensor.shape == (2, 8, 10)
    assert torch.equal(bitmasks.tensor[0], torch.from_numpy(bitmask))
    assert bitmasks.nonempty().tolist() == [True, True]


def test_extent_transform_default_interpolation():
    from PIL import Image

    from detectron2.data.transforms import ExtentTransform

    transform = ExtentTransform(src_rect=(0, 0, 8, 8), output_size=(4, 4))
    assert transform.interp == Image.BILINEAR
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    image[:, 4:] = 200
    out = transform.apply_image(image)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert (out[:, :2] == 100).all() and (out[:, 2:] == 200).all()
    segmentation = transform.apply_segmentation(np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert segmentation.shape == (4, 4)


def test_sem_seg_evaluator_miou(tmp_path, catalog_name):
    from PIL import Image

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    gt = np.array(
        [[0, 0, 0, 0],
         [0, 0, 0, 0],
         [1, 1, 1, 1],
         [1, 1, 1, 255]], dtype=np.uint8,
    )  # fmt: skip
    pred = np.array(
        [[0, 0, 0, 0],
         [0, 0, 1, 1],
         [1, 1, 1, 1],
         [1, 0, 0, 0]],
    )  # fmt: skip
    gt_file = tmp_path / "gt.png"
    Image.fromarray(gt).save(gt_file)
    DatasetCatalog.register(
        catalog_name,
        lambda: [
            {"file_name": "img.jpg", "sem_seg_file_name": str(gt_file), "height": 4, "width": 4}
        ],
    )
    MetadataCatalog.get(catalog_name).set(stuff_classes=["a", "b"], ignore_label=255)

    evaluator = SemSegEvaluator(catalog_name, distributed=False)
    evaluator.reset()
    logits = F.one_hot(torch.from_numpy(pred), 2).permute(2, 0, 1).float()
    evaluator.process([{"file_name": "img.jpg"}], [{"sem_seg": logits}])
    res = evaluator.evaluate()["sem_seg"]

    # 15 labelled pixels (one is 255). Class a: 8 in GT, 8 predicted, 6 agree -> IoU 6/10.
    # Class b: 7 in GT, 7 predicted (on labelled pixels), 5 agree -> IoU 5/9.
    assert res["IoU-a"] == pytest.approx(100 * 6 / 10)
    assert res["IoU-b"] == pytest.approx(100 * 5 / 9)
    assert res["mIoU"] == pytest.approx(100 * (6 / 10 + 5 / 9) / 2)
    assert res["pACC"] == pytest.approx(100 * 11 / 15)
    assert res["mACC"] == pytest.approx(100 * (6 / 8 + 5 / 7) / 2)
    assert res["fwIoU"] == pytest.approx(100 * (8 / 15 * 6 / 10 + 7 / 15 * 5 / 9))


def test_numpy_alias_call_sites(tmp_path):
    """Other call sites patch 0004 changed: VOC loading, class histogram, old mask pasting."""
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.data.datasets.pascal_voc import load_voc_instances
    from detectron2.layers.mask_ops import paste_mask_in_image_old

    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    for fileid, (name, box) in {"a": ("cat", (1, 2, 5, 6)), "b": ("dog", (3, 3, 9, 7))}.items():
        root = ET.Element("annotation")
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = "10"
        ET.SubElement(size, "height").text = "8"
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, key).text = str(value)
        ET.ElementTree(root).write(tmp_path / "Annotations" / f"{fileid}.xml")
    dicts = load_voc_instances(str(tmp_path), "train", ["cat", "dog"])
    assert [d["image_id"] for d in dicts] == ["a", "b"]
    assert dicts[0]["annotations"][0]["bbox"] == [0.0, 1.0, 5.0, 6.0]
    assert dicts[1]["annotations"][0]["category_id"] == 1

    print_instances_class_histogram(dicts, ["cat", "dog"])

    pasted = paste_mask_in_image_old(
        torch.ones(4, 4), torch.tensor([2.0, 2.0, 6.0, 6.0]), 10, 10, 0.5
    )
    assert pasted.shape == (10, 10)
    assert pasted[2:7, 2:7].all() and pasted.sum() == 25


def test_visualizer_draws_panoptic_segmentation():
    from detectron2.data.catalog import Metadata
    from detectron2.utils.visualizer import Visualizer

    seg = torch.zeros(16, 16, dtype=torch.int32)  # 0: no prediction
    seg[:8] = 1  # stuff
    seg[10:14, 2:6] = 2  # thing
    segments_info = [
        {"id": 1, "category_id": 0, "isthing": False},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.9},
    ]
    metadata = Metadata(name="_test_vis", thing_classes=["cat"], stuff_classes=["sky"])
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    out = Visualizer(image, metadata).draw_panoptic_seg(seg, segments_info).get_image()
    assert out.shape == (16, 16, 3) and out.any()


# --------------------------------------------------------------------------------------------
# Patch 0005: Python 3.11 (random.sample no longer accepts a set).
# --------------------------------------------------------------------------------------------


def test_map_dataset_retries_other_indices_when_mapper_returns_none():
    from detectron2.data.common import MapDataset

    def skip_two(x):
        return None if x == 2 else 10 * x

    dataset = MapDataset(list(range(5)), skip_two)
    assert dataset[1] == 10
    assert dataset[2] in {0, 10, 30, 40}
    assert 2 not in dataset._fallback_candidates
    # The fallback is drawn from a seeded generator: the same on a fresh dataset.
    assert MapDataset(list(range(5)), skip_two)[2] == MapDataset(list(range(5)), skip_two)[2]

    # Only the last element maps: retries drop the failures until they reach it.
    only_last = MapDataset(list(range(5)), lambda x: x if x == 4 else None)
    assert only_last[0] == 4
    assert 0 not in only_last._fallback_candidates and 4 in only_last._fallback_candidates


# --------------------------------------------------------------------------------------------
# Patch 0006: torch 2.x schedulers derive from LRScheduler, not _LRScheduler.
# --------------------------------------------------------------------------------------------


def test_lr_scheduler_hook_saves_and_restores_torch_scheduler_state():
    from detectron2.engine import hooks

    def make():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=1.0)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.1)
        return optimizer, scheduler

    optimizer, scheduler = make()
    assert not isinstance(scheduler, torch.optim.lr_scheduler._LRScheduler)
    hook = hooks.LRScheduler(optimizer=optimizer, scheduler=scheduler)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    state = hook.state_dict()
    assert state, "LRScheduler hook returned an empty state_dict for a torch scheduler"
    assert state["last_epoch"] == 3

    optimizer2, scheduler2 = make()
    hooks.LRScheduler(optimizer=optimizer2, scheduler=scheduler2).load_state_dict(state)
    assert scheduler2.last_epoch == 3
    assert scheduler2.get_last_lr() == pytest.approx([0.1])


# --------------------------------------------------------------------------------------------
# Patch 0007: multi-process training on CPU (gloo, DDP without device_ids).
# --------------------------------------------------------------------------------------------


def _launch_worker(out_dir):
    """Runs in each process that detectron2.engine.launch spawns (so it is module-level)."""
    import faulthandler

    import torch.distributed as dist

    # A process stuck in a collective prints where, and exits, instead of hanging the test.
    faulthandler.dump_traceback_later(_LAUNCH_HANG_S, exit=True)
    from torch.nn.parallel import DistributedDataParallel

    from detectron2.engine.defaults import create_ddp_model
    from detectron2.utils import comm

    rank = comm.get_rank()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)

    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.constant_(model.weight, 1.0)
    ddp = create_ddp_model(model)
    ddp(torch.full((1, 3), float(rank + 1))).sum().backward()  # DDP averages the gradients

    result = {
        "rank": rank,
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "backend": str(dist.get_backend()),
        "sum": total.item(),
        "is_ddp": isinstance(ddp, DistributedDataParallel),
        "device_ids": ddp.device_ids,
        "grad": model.weight.grad.tolist(),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    comm.synchronize()
    dist.destroy_process_group()


# Seconds after which a launched process reports a hang and exits. ~10 s on 2 idle cores; the
# limits leave room for a loaded machine, where starting the processes can take a minute.
_LAUNCH_HANG_S = 150
# Launches tried before the test fails: now and then (twice in the full-suite runs of fresh
# clones, with other jobs on the 2 cores) one launched process waits in its first collective
# until the hang limit while the other stays silent; the cause, inside detectron2's launch and
# gloo, is not found. A second, fresh launch tells that apart from a launch that never works.
_LAUNCH_ATTEMPTS = 2
# launch() runs in a fresh interpreter: the spawned processes must not depend on what earlier
# tests left in pytest's process (threads, signal handlers, environment), where this test once
# in a while hung with one child stuck in the first barrier and none of its stacks printed.
_LAUNCH_SCRIPT = """
import sys
from datetime import timedelta
sys.path.insert(0, sys.argv[1])
from detectron2.engine import launch
from test_detectron2_build import _launch_worker
launch(_launch_worker, num_gpus_per_machine=2, dist_url="file://" + sys.argv[2] + "/dist_init",
       args=(sys.argv[2],), timeout=timedelta(seconds=150))
"""


# The project's own trainer passes device_ids itself (panoptic_zoo.engine.trainer.ddp_device_ids),
# so train_net.py --num-gpus 2 on CPU works on a source build too (tests/engine).
@pytest.mark.patched_detectron2
@pytest.mark.timeout(_LAUNCH_ATTEMPTS * (_LAUNCH_HANG_S + 60) + 30)
def test_launch_two_cpu_processes(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # keep the processes off any GPU
    for attempt in range(_LAUNCH_ATTEMPTS):
        out_dir = tmp_path / f"attempt{attempt}"
        out_dir.mkdir()
        run = subprocess.run(
            [sys.executable, "-c", _LAUNCH_SCRIPT, str(Path(__file__).resolve().parent), str(out_dir)],
            capture_output=True, text=True, env=env, timeout=_LAUNCH_HANG_S + 60,
        )  # fmt: skip
        if run.returncode == 0 or "Timeout" not in run.stderr:
            break
    assert run.returncode == 0, run.stderr[-4000:]
    results = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, result in enumerate(results):
        assert result["rank"] == result["local_rank"] == rank
        assert result["world_size"] == 2
        assert result["backend"] == "gloo"
        assert result["sum"] == 3.0
        assert result["is_ddp"] and result["device_ids"] is None
        assert result["grad"] == [[1.5, 1.5, 1.5]]


@pytest.mark.patched_detectron2
def test_modulated_deform_conv_on_empty_batch_keeps_output_shape():
    from detectron2.layers import ModulatedDeformConv

    conv = ModulatedDeformConv(4, 6, kernel_size=3, stride=2, padding=1, dilation=1)
    x = torch.zeros(0, 4, 9, 11)
    out = conv(x, torch.zeros(0, 18, 5, 6), torch.zeros(0, 9, 5, 6))
    assert out.shape == (0, 6, 5, 6)
