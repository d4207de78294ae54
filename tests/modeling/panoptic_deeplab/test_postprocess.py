"""Post-processing on hand-built heatmaps/offsets, and equality with detectron2's reference."""

from __future__ import annotations

import pytest
import torch
from detectron2.projects.panoptic_deeplab import post_processing as reference

from panoptic_zoo.modeling.panoptic_deeplab.postprocess import (
    find_instance_centers,
    get_panoptic_segmentation,
)

VOID, DIVISOR = -1, 1000
THINGS = (0, 1)  # classes 0, 1 are things, 2 and 3 stuff
NUM_CLASSES = 4


def _segment(sem_seg, heatmap, offsets, **kwargs):
    options = dict(thing_ids=THINGS, num_classes=NUM_CLASSES, label_divisor=DIVISOR, stuff_area=4,
                   void_label=VOID, threshold=0.1, nms_kernel=3, top_k=None)  # fmt: skip
    options.update(kwargs)
    return get_panoptic_segmentation(sem_seg[None], heatmap[None], offsets[None], **options)


def _offsets_to(points, height, width):
    """Offsets that move every pixel onto the nearest of ``points`` ((y, x) tuples)."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    grid = torch.stack((y, x)).float()
    targets = torch.tensor(points, dtype=torch.float32)[:, :, None, None]
    nearest = ((grid[None] - targets) ** 2).sum(1).argmin(0)
    return targets[nearest].squeeze(-1).squeeze(-1).permute(2, 0, 1) - grid


def test_two_instances_majority_vote_and_stuff_area():
    sem = torch.full((8, 12), 2)
    sem[1:5, 1:5] = 0  # instance A: thing class 0 ...
    sem[1, 1] = 1  # ... with one pixel voting class 1
    sem[2:7, 7:11] = 1  # instance B: thing class 1
    sem[7, 0:3] = 3  # 3 pixels of stuff class 3: below stuff_area 4
    heatmap = torch.zeros(8, 12)
    heatmap[2, 2], heatmap[4, 9], heatmap[4, 8] = 0.9, 0.8, 0.5  # (4, 8): suppressed by NMS
    offsets = _offsets_to([(2, 2), (4, 9)], 8, 12)

    panoptic, centers = _segment(sem, heatmap, offsets)
    assert centers.tolist() == [[0, 2, 2], [0, 4, 9]]
    expected = torch.full((8, 12), 2 * DIVISOR)
    expected[1:5, 1:5] = 0 * DIVISOR + 1  # class 0 by majority (15 of 16 pixels)
    expected[2:7, 7:11] = 1 * DIVISOR + 1  # first instance of class 1
    expected[7, 0:3] = VOID
    assert torch.equal(panoptic[0], expected)


def test_instances_numbered_per_class_and_empty_instances_skipped():
    sem = torch.full((6, 20), 2)
    sem[:, 0:5] = 1
    sem[:, 10:15] = 1
    heatmap = torch.zeros(6, 20)
    for x in (2, 7, 12, 17):  # the center at x=7 and x=17 get no thing pixels
        heatmap[3, x] = 0.5
    offsets = _offsets_to([(3, 2), (3, 7), (3, 12), (3, 17)], 6, 20)
    panoptic, _ = _segment(sem, heatmap, offsets)
    assert set(panoptic[0, :, 0:5].unique().tolist()) == {DIVISOR + 1}
    assert set(panoptic[0, :, 10:15].unique().tolist()) == {DIVISOR + 2}


def test_threshold_top_k_and_no_centers():
    heatmap = torch.zeros(1, 10, 10)
    heatmap[0, 1, 1], heatmap[0, 5, 5], heatmap[0, 8, 8], heatmap[0, 1, 8] = 0.9, 0.7, 0.3, 0.05
    assert len(find_instance_centers(heatmap, 0.1, 3, None)) == 3  # 0.05 below threshold
    # Like the reference, keep scores strictly above the k-th: top_k=3 keeps 2 centers.
    assert find_instance_centers(heatmap, 0.1, 3, 3).tolist() == [[0, 1, 1], [0, 5, 5]]
    sem = torch.zeros(10, 10, dtype=torch.int64)
    panoptic, centers = _segment(sem, torch.zeros(10, 10), torch.zeros(2, 10, 10))
    assert len(centers) == 0 and (panoptic == VOID).all()  # things without centers: void
    stuff_only = torch.full((10, 10), 2)
    panoptic, centers = _segment(stuff_only, heatmap[0], torch.zeros(2, 10, 10))
    assert len(centers) == 3 and (panoptic == 2 * DIVISOR).all()  # centers without things


def _random_prediction(generator, height, width, num_centers):
    sem = torch.randint(0, NUM_CLASSES, ((height + 3) // 4, (width + 3) // 4), generator=generator)
    sem = sem.repeat_interleave(4, 0).repeat_interleave(4, 1)[:height, :width]
    heatmap = torch.rand(height, width, generator=generator) * 0.05
    ys = torch.randint(0, height, (num_centers,), generator=generator)
    xs = torch.randint(0, width, (num_centers,), generator=generator)
    heatmap[ys, xs] = torch.rand(num_centers, generator=generator) * 0.9 + 0.1
    offsets = torch.randn(2, height, width, generator=generator) * 8
    return sem, heatmap, offsets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_reference_on_random_predictions(seed):
    generator = torch.Generator().manual_seed(seed)
    sem, heatmap, offsets = _random_prediction(generator, 61, 83, num_centers=40)
    options = dict(label_divisor=DIVISOR, stuff_area=10, void_label=VOID, threshold=0.1,
                   nms_kernel=7, top_k=30)  # fmt: skip
    expected, expected_centers = reference.get_panoptic_segmentation(
        sem[None], heatmap[None], offsets, thing_ids=set(THINGS), **options
    )
    panoptic, centers = get_panoptic_segmentation(
        sem[None], heatmap[None], offsets[None], THINGS, NUM_CLASSES, **options
    )
    assert torch.equal(centers[:, 1:], expected_centers[0])
    assert torch.equal(panoptic, expected)


def test_batch_equals_images_one_by_one():
    generator = torch.Generator().manual_seed(3)
    images = [_random_prediction(generator, 40, 52, num_centers=15) for _ in range(2)]
    sem, heatmap, offsets = (torch.stack(t) for t in zip(*images))
    options = dict(thing_ids=THINGS, num_classes=NUM_CLASSES, label_divisor=DIVISOR,
                   stuff_area=10, void_label=VOID, nms_kernel=5, top_k=200)  # fmt: skip
    batched, _ = get_panoptic_segmentation(sem, heatmap, offsets, **options)
    for i in range(2):
        single, _ = get_panoptic_segmentation(sem[i : i + 1], heatmap[i : i + 1],
                                              offsets[i : i + 1], **options)  # fmt: skip
        assert torch.equal(batched[i], single[0])


def test_batch_with_an_image_without_centers():
    generator = torch.Generator().manual_seed(4)
    images = [_random_prediction(generator, 40, 52, num_centers=15) for _ in range(2)]
    sem, heatmap, offsets = (torch.stack(t) for t in zip(*images))
    heatmap[1] = 0  # image 1: thing pixels but no center -> its things are void
    panoptic, centers = get_panoptic_segmentation(sem, heatmap, offsets, THINGS, NUM_CLASSES,
                                                  DIVISOR, 10, VOID, nms_kernel=5)  # fmt: skip
    assert set(centers[:, 0].tolist()) == {0}
    assert (panoptic[1][sem[1] < len(THINGS)] == VOID).all()


def test_rejects_bad_shapes_and_small_label_divisor():
    sem, heatmap = torch.zeros(1, 4, 4, dtype=torch.int64), torch.zeros(1, 4, 4)
    offsets_without_channels = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match="offsets"):
        get_panoptic_segmentation(sem, heatmap, offsets_without_channels, THINGS, NUM_CLASSES,
                                  DIVISOR, 0, VOID)  # fmt: skip
    with pytest.raises(ValueError, match="label_divisor"):
        get_panoptic_segmentation(sem, heatmap, torch.zeros(1, 2, 4, 4), THINGS, NUM_CLASSES,
                                  label_divisor=100, stuff_area=0, void_label=VOID,
                                  top_k=200)  # fmt: skip
