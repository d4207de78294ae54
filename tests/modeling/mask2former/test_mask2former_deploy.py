"""
Mask2Former through panoptic_zoo.deploy: the network (backbone, pixel decoder, transformer
decoder) exported to TorchScript and ONNX with dynamic sizes, post-processed by the eager
model's own inference; the panoptic output of tiny shapes images (odd sizes, two padded sizes)
equal to the eager model's.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.data import DatasetCatalog
from panoptic_testing import shrunk_shapes_cfg

from panoptic_zoo.data import build_dataset_mapper
from panoptic_zoo.deploy import export_network, load
from panoptic_zoo.deploy.check import check_deployed
from panoptic_zoo.deploy.export import export_config, network_input
from panoptic_zoo.engine import build_inference_model

LARGER_SIZE = (101, 131)


def _model_and_inputs(format, tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg("mask2former_R_18.yaml", tiny_shapes, tmp_path)
    # The images at their own, odd sizes; every query kept, so post-processing has segments.
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 0,
                         "MODEL.MASK2FORMER.INFERENCE.OBJECT_MASK_THRESHOLD", 0.0,
                         "MODEL.MASK2FORMER.INFERENCE.OVERLAP_THRESHOLD", 0.0])  # fmt: skip
    cfg = export_config(cfg, format)
    torch.manual_seed(0)
    model = build_inference_model(cfg, "")
    with torch.no_grad():  # never "no object": the untrained queries all give segments
        model.head.predictor.class_embed.bias[-1] = -10.0
    mapper = build_dataset_mapper(cfg, is_train=False)
    inputs = [mapper(record) for record in DatasetCatalog.get(tiny_shapes["val"])[:2]]
    # The second image enlarged to another odd size, which pads to another size.
    image = inputs[1]["image"][None].float()
    image = torch.nn.functional.interpolate(image, size=LARGER_SIZE, mode="bilinear")[0]
    inputs[1]["image"] = image.round().to(inputs[1]["image"].dtype)
    inputs[1]["height"], inputs[1]["width"] = LARGER_SIZE
    return cfg, model, inputs


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_exported_panoptic_output_is_the_eager_one(format, tiny_shapes, tmp_path):
    cfg, model, inputs = _model_and_inputs(format, tiny_shapes, tmp_path)
    # Traced on the first image, run on it and on one of another padded size: the deformable
    # attention's level sizes are traced from the input, not recorded as constants.
    example = network_input(model, inputs[:1])
    assert example.shape[-2:] != network_input(model, inputs[1:]).shape[-2:]
    path = export_network(model, cfg, example, tmp_path / f"net.{format}", format, dynamic=True)
    reports = check_deployed(model, load(path), inputs)
    assert all(r["segments"] > 0 for r in reports)
    assert all(r["pixel_agreement"] >= 0.999 and r["same_segments"] for r in reports)
