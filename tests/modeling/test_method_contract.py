"""
Every registered method (panoptic_zoo.modeling.methods), through the shared pieces: its shapes
config shrunk to test size keeps the output contract (panoptic_zoo.postprocess.outputs), gives a
batch of two differently sized images the results those images get one by one, and trains and
evaluates through the real Trainer, mapper and evaluators.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from panoptic_testing import (
    assert_valid_evaluation,
    distinct_untrained_queries,
    predict_batched_and_single,
    shrunk_shapes_cfg,
    train_and_read_results,
)

from panoptic_zoo.config import dataset_class_counts
from panoptic_zoo.modeling.methods import registered_methods
from panoptic_zoo.postprocess import check_panoptic_output

METHODS = registered_methods()
# Options under which an untrained model keeps thing segments, so that the contract is checked
# on them too; a method without an entry is checked with its config's thresholds.
KEEP_THINGS = {
    "PanopticFPN": ["MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", 0.0,
                    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0],
    "UPSNet": ["MODEL.UPSNET.INFERENCE.SCORE_THRESH", 0.0],
    "PanopticDeepLabModel": ["MODEL.PANOPTIC_DEEPLAB.CENTER_THRESHOLD", 0.0],
    "PanopticFCN": ["MODEL.PANOPTIC_FCN.INFERENCE.INSTANCE_SCORE_THRESH", 0.0],
    # One decoder layer: after 9 untrained ones all queries predict the same class.
    "Mask2Former": ["MODEL.MASK2FORMER.INFERENCE.OBJECT_MASK_THRESHOLD", 0.0,
                    "MODEL.MASK2FORMER.INFERENCE.OVERLAP_THRESHOLD", 0.0,
                    "MODEL.MASK2FORMER.DECODER.LAYERS", 1],
}  # fmt: skip
# Changes to an untrained model without which it may predict no segment at all.
ADJUST_UNTRAINED = {"Mask2Former": distinct_untrained_queries}


@pytest.fixture(params=METHODS, ids=[m.meta_architecture for m in METHODS])
def method(request):
    return request.param


def _cfg(method, tiny_shapes, tmp_path, max_iter: int = 2):
    return shrunk_shapes_cfg(Path(method.shapes_config).name, tiny_shapes, tmp_path, max_iter)


def _without_scores(segments_info: list[dict]) -> list[dict]:
    return [{k: v for k, v in info.items() if k != "score"} for info in segments_info]


def _scores(segments_info: list[dict]) -> list[float]:
    return [info["score"] for info in segments_info if "score" in info]


def test_batch_of_two_equals_single_images_and_keeps_the_output_contract(
    method, tiny_shapes, tmp_path
):
    cfg = _cfg(method, tiny_shapes, tmp_path)
    cfg.merge_from_list(KEEP_THINGS.get(method.meta_architecture, []))
    torch.manual_seed(0)  # the same untrained weights whatever ran before
    _, inputs, batched, single = predict_batched_and_single(
        cfg, tiny_shapes["val"], ADJUST_UNTRAINED.get(method.meta_architecture)
    )
    num_things, num_stuff = dataset_class_counts(tiny_shapes["val"])
    for result, alone, x in zip(batched, single, inputs):
        size = (x["height"], x["width"])
        check_panoptic_output(result, size)
        segment_ids, segments_info = result["panoptic_seg"]
        assert segments_info, "an untrained model still predicts stuff"
        assert set(segment_ids.unique().tolist()) - {0} == {info["id"] for info in segments_info}
        for info in segments_info:
            if "area" in info:
                assert info["area"] == int((segment_ids == info["id"]).sum())
            if info["isthing"]:
                assert 0 <= info["category_id"] < num_things
            else:
                assert 1 <= info["category_id"] <= num_stuff
        assert result["sem_seg"].shape == (1 + num_stuff, *size)

        # Batched convolutions round differently: scores agree to float precision only.
        assert torch.equal(segment_ids, alone["panoptic_seg"][0])
        alone_info = alone["panoptic_seg"][1]
        assert _without_scores(segments_info) == _without_scores(alone_info)
        assert _scores(segments_info) == pytest.approx(_scores(alone_info), abs=1e-4)
        torch.testing.assert_close(result["sem_seg"], alone["sem_seg"], atol=1e-4, rtol=0)
        torch.testing.assert_close(
            result["instances"].scores, alone["instances"].scores, atol=1e-4, rtol=0
        )
    if method.meta_architecture in KEEP_THINGS:
        assert any(info["isthing"] for r in batched for info in r["panoptic_seg"][1])


def test_trains_and_evaluates_through_the_trainer(method, tiny_shapes, tmp_path):
    cfg = _cfg(method, tiny_shapes, tmp_path)
    logged, results = train_and_read_results(cfg)

    losses = [row for row in logged if "total_loss" in row]
    assert losses and all(
        math.isfinite(value) for row in losses for key, value in row.items()
        if key.startswith("loss_") or key == "total_loss"
    )  # fmt: skip
    # Box and mask AP of the instances where the config asks for them (MODEL.MASK_ON).
    detection = {"bbox", "segm"} if cfg.MODEL.MASK_ON else set()
    assert_valid_evaluation(results, {"panoptic_seg", "sem_seg"} | detection)
