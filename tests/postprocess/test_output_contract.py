"""The output contract's builder and checks on hand-built outputs of a 5 x 7 image."""

from __future__ import annotations

import pytest
import torch
from detectron2.structures import Boxes, Instances

from panoptic_zoo.postprocess import check_panoptic_output, panoptic_output

HEIGHT, WIDTH = 5, 7


def _instances(size=(HEIGHT, WIDTH)) -> Instances:
    instances = Instances(size)
    instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 3.0, 2.0]]))
    instances.scores = torch.tensor([0.9])
    instances.pred_classes = torch.tensor([1])
    return instances


def _parts():
    segment_ids = torch.zeros((HEIGHT, WIDTH), dtype=torch.int32)
    segment_ids[:2, :3] = 1
    segment_ids[3:] = 2
    segments_info = [
        {"id": 1, "category_id": 1, "isthing": True, "score": 0.9, "area": 6},
        {"id": 2, "category_id": 3, "isthing": False, "area": 14},
    ]
    return (segment_ids, segments_info), torch.zeros((4, HEIGHT, WIDTH)), _instances()


def test_a_valid_output_is_built_as_the_evaluators_read_it():
    panoptic_seg, sem_seg, instances = _parts()
    output = panoptic_output(panoptic_seg, sem_seg, instances)
    assert set(output) == {"panoptic_seg", "sem_seg", "instances"}
    assert output["panoptic_seg"] is panoptic_seg and output["sem_seg"] is sem_seg
    check_panoptic_output(output, (HEIGHT, WIDTH))
    # Zero segments and zero instances are a valid (empty) prediction.
    empty = Instances(
        (HEIGHT, WIDTH), pred_boxes=Boxes(torch.zeros((0, 4))), scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.long),
    )  # fmt: skip
    panoptic_output((torch.zeros((HEIGHT, WIDTH), dtype=torch.int64), []), sem_seg, empty)


def _broken(case: str):
    (segment_ids, segments_info), sem_seg, instances = _parts()
    if case == "float ids":
        segment_ids = segment_ids.float()
    elif case == "batched ids":
        segment_ids = segment_ids[None]
    elif case == "id 0":
        segments_info[0]["id"] = 0
    elif case == "repeated id":
        segments_info[1]["id"] = 1
    elif case == "no isthing":
        del segments_info[1]["isthing"]
    elif case == "thing without score":
        del segments_info[0]["score"]
    elif case == "sem_seg size":
        sem_seg = sem_seg[:, :, :-1]
    elif case == "integer sem_seg":
        sem_seg = sem_seg.long()
    elif case == "instances size":
        instances = _instances((HEIGHT + 1, WIDTH))
    elif case == "no scores":
        instances.remove("scores")
    return {"panoptic_seg": (segment_ids, segments_info), "sem_seg": sem_seg,
            "instances": instances}  # fmt: skip


@pytest.mark.parametrize(
    "case, message",
    [
        ("float ids", "integer \\(H, W\\) tensor; got a torch.float32"),
        ("batched ids", "of shape \\(1, 5, 7\\)"),
        ("id 0", "distinct integers >= 1"),
        ("repeated id", "distinct integers >= 1"),
        ("no isthing", "lacks \\['isthing'\\]"),
        ("thing without score", "lacks its 'score'"),
        ("sem_seg size", "'sem_seg' must be floating-point \\(1 \\+ S, 5, 7\\)"),
        ("integer sem_seg", "got a torch.int64 tensor"),
        ("instances size", "image size \\(5, 7\\); got \\(6, 7\\)"),
        ("no scores", "needs \\['pred_boxes', 'scores', 'pred_classes'\\]"),
    ],
)
def test_a_broken_output_is_an_error_naming_the_key(case, message):
    with pytest.raises(ValueError, match=message):
        check_panoptic_output(_broken(case))


def test_missing_keys_and_the_wrong_image_size_are_named():
    panoptic_seg, sem_seg, instances = _parts()
    with pytest.raises(ValueError, match="lacks \\['instances'\\]"):
        check_panoptic_output({"panoptic_seg": panoptic_seg, "sem_seg": sem_seg})
    with pytest.raises(ValueError, match="is \\(5, 7\\), the image \\(5, 8\\)"):
        check_panoptic_output(panoptic_output(panoptic_seg, sem_seg, instances), (5, 8))
