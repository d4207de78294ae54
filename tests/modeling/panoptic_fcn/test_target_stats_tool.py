"""tools/panoptic_fcn_target_stats.py on the tiny shapes dataset: the level counts it reports."""

from __future__ import annotations

import importlib.util

from panoptic_testing import CONFIGS, REPO

from panoptic_zoo.config import get_cfg

spec = importlib.util.spec_from_file_location(
    "panoptic_fcn_target_stats", REPO / "tools" / "panoptic_fcn_target_stats.py"
)
target_stats = importlib.util.module_from_spec(spec)
spec.loader.exec_module(target_stats)

SCALED_RANGES = [[1, 16], [8, 32], [16, 64], [32, 128], [64, 512]]


def _rows(tiny_shapes, instance_scales=None):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / "panoptic_fcn_R_18.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    if instance_scales is not None:
        cfg.MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.INSTANCE_SCALES = instance_scales
    return target_stats.level_statistics(cfg, tiny_shapes["train"], max_images=4)


def test_scaled_ranges_give_every_thing_a_radius_0_gaussian(tiny_shapes):
    rows = _rows(tiny_shapes, SCALED_RANGES)
    assert [r["level"] for r in rows] == ["p3", "p4", "p5", "p6", "p7"]
    assert sum(r["assignments"] for r in rows) > 0
    for r in rows:
        assert r["radius_0"] == r["assignments"] and r["radius_1"] == r["radius_2_plus"] == 0


def test_official_ranges_give_wider_gaussians_on_the_fine_levels(tiny_shapes):
    rows = _rows(tiny_shapes)
    for r in rows:
        assert r["radius_0"] + r["radius_1"] + r["radius_2_plus"] == r["assignments"]
    assert rows[0]["assignments"] > 0
    # Unlike the scaled ranges, some things span enough cells for a radius of 1 or more, and
    # none of these small images' things reaches P6 or P7 (sqrt(box area) >= 128 px).
    assert sum(r["radius_1"] + r["radius_2_plus"] for r in rows) > 0
    assert all(r["assignments"] == 0 for r in rows[3:])
