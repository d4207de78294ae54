"""The bridge to the official Panoptic FCN that needs no official code: its weights in the
official key names (through the converter) and the benchmark's reference choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from panoptic_zoo.benchmark.reference import reference_for
from panoptic_zoo.config import get_cfg
from panoptic_zoo.model_zoo.converters import ConversionError, convert_official_panoptic_fcn
from panoptic_zoo.model_zoo.official_panoptic_fcn import official_state_dict

GOLDEN = Path(__file__).parents[1] / "modeling" / "panoptic_fcn" / "golden"
GOLDEN = GOLDEN / "official_inference.pth"


def test_official_state_dict_gives_the_official_weights_back():
    golden = torch.load(GOLDEN, weights_only=True)
    official = golden["official_state_dict"]
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(golden["config_yaml"]))
    model = build_model(cfg)
    model.load_state_dict(convert_official_panoptic_fcn(official).state_dict)

    back = official_state_dict(list(official), cfg, model.state_dict())
    assert list(back) == list(official)
    assert all(torch.equal(back[k], official[k]) for k in official)
    # An official key list missing a layer cannot hold the model's weights.
    with pytest.raises(ConversionError, match="back exactly"):
        official_state_dict(list(official)[:-1], cfg, model.state_dict())


def test_benchmark_reference_of_panoptic_fcn_is_the_official_code_when_given(tmp_path):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "PanopticFCN"
    without = reference_for(cfg)
    assert not without.runs_here and "--panoptic-fcn-official-src" in without.note
    given = reference_for(cfg, str(tmp_path))
    assert given.runs_here and given.name == "Jia-Research-Lab/PanopticFCN"
