"""Without the C extensions (PANOPTIC_ZOO_NO_C_EXTENSIONS=1, as a build without a compiler): one
notice, and the NumPy / PyTorch paths give the C kernels' results."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from detectron2.modeling import build_model
from PIL import Image
from panoptic_testing import CONFIGS

from panoptic_zoo.acceleration import optimize_for_cpu
from panoptic_zoo.config import get_cfg
from panoptic_zoo.evaluation.panoptic_png import decode_segment_ids
from panoptic_zoo.evaluation.pq import pixel_pairs
from panoptic_zoo.utils.c_extensions import DISABLE_VARIABLE
from panoptic_zoo.utils.config import shrink_to_test_size

# UPSNet: the class argmax; Panoptic-DeepLab: the class argmax and log-sum-exps (their deformable
# and depthwise convolutions run ONNX Runtime either way).
MODELS = ("upsnet_R_50_1x.yaml", "panoptic_deeplab_R_52_DC5_dsconv_200k.yaml")

_IN_SUBPROCESS = """
import sys, torch
sys.path[:0] = sys.argv[2:]
from test_without_c_extensions import results
torch.save(results(), sys.argv[1])
"""


def results() -> dict:
    """What the C extensions compute, on fixed inputs: PQ's pixel pairs and PNG ids, and two
    optimized models' outputs."""
    generator = np.random.default_rng(0)
    gt = generator.integers(0, 5, (37, 23)).astype(np.uint32) * 1000
    pred = generator.integers(0, 4, (37, 23)).astype(np.uint32)
    pixels = np.stack([gt % 256, gt // 256 % 256, gt // 65536], axis=-1).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    found = {
        "pixel_pairs": sorted(zip(*pixel_pairs(gt, pred))),
        "png_ids": decode_segment_ids(png.getvalue()),
    }
    for name in MODELS:
        cfg = get_cfg()
        cfg.merge_from_file(str(CONFIGS / "coco" / name))
        shrink_to_test_size(cfg)
        cfg.MODEL.DEVICE = "cpu"
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        changes = optimize_for_cpu(model, cfg)
        image = torch.rand(3, 67, 91, generator=torch.Generator().manual_seed(1)) * 255
        with torch.inference_mode():
            (output,) = model([{"image": image}])
        found[name] = {"changes": changes, "sem_seg": output["sem_seg"],
                       "panoptic_seg": output["panoptic_seg"][0]}  # fmt: skip
    return found


def test_fallback_paths_give_the_c_kernels_results(tmp_path):
    path = tmp_path / "fallback.pt"
    tests = Path(__file__).parent
    run = subprocess.run(
        [sys.executable, "-c", _IN_SUBPROCESS, str(path), str(tests), str(tests.parent)],
        env={**__import__("os").environ, DISABLE_VARIABLE: "1", "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    notices = [line for line in run.stderr.splitlines() if "C extensions not used" in line]
    assert len(notices) == 1, run.stderr[-3000:]
    fallback, compiled = torch.load(path, weights_only=False), results()
    assert fallback["pixel_pairs"] == compiled["pixel_pairs"]
    assert np.array_equal(fallback["png_ids"], compiled["png_ids"])
    for name in MODELS:
        assert not fallback[name]["changes"]["class_map_kernels"]
        assert compiled[name]["changes"]["class_map_kernels"]
        expected = compiled[name]["sem_seg"]
        scale = expected.abs().max().item()
        torch.testing.assert_close(fallback[name]["sem_seg"], expected, rtol=0, atol=1e-3 * scale)
        assert torch.equal(fallback[name]["panoptic_seg"], compiled[name]["panoptic_seg"])
