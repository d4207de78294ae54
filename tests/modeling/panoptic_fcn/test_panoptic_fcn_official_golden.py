"""
Converted official weights give the official implementation's outputs, without the official
code: golden/official_inference.pth holds a tiny randomly initialized official model's state
dict, images, and the official per-image outputs (written by tools/parity/panoptic_fcn.py
--write-golden, the official commit recorded in it). Both batches hold two odd-sized images: one
whose images pad to the same size, one whose do not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from panoptic_zoo.config import get_cfg
from panoptic_zoo.model_zoo.converters import convert_official_panoptic_fcn

GOLDEN = Path(__file__).parent / "golden" / "official_inference.pth"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def converted_model(golden):
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(golden["config_yaml"]))
    model = build_model(cfg)
    conversion = convert_official_panoptic_fcn(
        golden["official_state_dict"], tuple(cfg.MODEL.PANOPTIC_FCN.FEATURE_ENCODER.IN_FEATURES)
    )
    assert not conversion.notes and not conversion.unused
    model.load_state_dict(conversion.state_dict)
    return model.eval()


def test_golden_records_the_official_commit(golden):
    assert len(golden["official_commit"]) == 40
    assert [b["name"] for b in golden["batches"]] == ["same-padding", "mixed-padding"]


@pytest.mark.parametrize("batch_index", [0, 1])
def test_converted_official_model_gives_the_official_outputs(golden, converted_model, batch_index):
    batch = golden["batches"][batch_index]
    records = [
        {"image": image.float(), "height": image.shape[1], "width": image.shape[2]}
        for image in batch["images"]
    ]
    with torch.no_grad():
        results = converted_model(records)
    for result, expected in zip(results, batch["outputs"]):
        ids, segments = result["panoptic_seg"]
        assert (ids == expected["panoptic_ids"].int()).float().mean() >= 0.999
        assert len(segments) == len(expected["segments_info"]) > 2
        for ours, official in zip(segments, expected["segments_info"]):
            keys = ("id", "category_id", "isthing")
            assert [ours[k] for k in keys] == [official[k] for k in keys]
            assert ours.get("score", 0.0) == pytest.approx(official.get("score", 0.0), abs=1e-4)
            if "area" in official:  # the official code records stuff areas only
                assert ours["area"] == official["area"]
        instances = result["instances"]
        assert instances.pred_classes.tolist() == expected["classes"].tolist()
        torch.testing.assert_close(instances.scores, expected["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(result["sem_seg"], expected["sem_seg"], atol=1e-4, rtol=0)
