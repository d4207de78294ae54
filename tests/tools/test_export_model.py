"""
tools/export_model.py: Panoptic FPN's network exported with torch.export, saved, reloaded and
equal to the eager model. Fixed-size export here: the dynamic-shape export runs the same code
path with symbolic sizes and takes ~10x longer (checked by running the tool).
"""

from __future__ import annotations

import importlib.util

import pytest
from detectron2.modeling import build_model
from panoptic_testing import CONFIGS, REPO

from panoptic_zoo.config import get_cfg

spec = importlib.util.spec_from_file_location("export_model", REPO / "tools" / "export_model.py")
export_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_model)


def test_export_round_trip(tmp_path, capsys):
    output = tmp_path / "panoptic_fpn.pt2"
    config = str(CONFIGS / "shapes" / "panoptic_fpn_R_18.yaml")
    assert (
        export_model.main(["--config-file", config, "--output", str(output), "--fixed-size"]) == 0
    )
    assert output.is_file() and "equal to the eager model" in capsys.readouterr().out


def test_only_panoptic_fpn_is_exported():
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / "panoptic_deeplab_R_18.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    with pytest.raises(ValueError, match="only Panoptic FPN"):
        export_model.PanopticFPNNetwork(build_model(cfg))
