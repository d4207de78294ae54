"""The mapper's training targets on a hand-built panoptic PNG (no augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
from detectron2.projects.panoptic_deeplab.target_generator import PanopticDeepLabTargetGenerator
from PIL import Image

from panoptic_zoo.data.datasets.panoptic import AnnotationError
from panoptic_zoo.modeling.panoptic_deeplab import PanopticDeepLabDatasetMapper, UnifiedIds

H, W, IGNORE = 20, 24, 255
IDS = UnifiedIds(num_thing_classes=3, num_stuff_classes=2)  # unified: things 0-2, stuff 3-4
SMALL, ROUND, CROWD, STUFF = 2, 3, 4, 1  # segment ids


def _dataset_dict(tmp_path, segments_info):
    ids = np.full((H, W), STUFF, dtype=np.uint32)
    ids[2:8, 2:10] = SMALL  # 48 px, centroid (4.5, 5.5)
    ids[10:18, 12:22] = ROUND  # 80 px, centroid (13.5, 16.5)
    ids[15:19, 0:4] = CROWD
    ids[19, :] = 0  # void
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "image.png")
    record = {"file_name": str(tmp_path / "image.png"), "height": H, "width": W, "image_id": 1,
              "pan_seg_file_name": str(tmp_path / "pan.png")}  # fmt: skip
    record["segments_info"] = segments_info
    return record, ids


SEGMENTS = [  # separated ids, as the project's loaders produce them
    {"id": STUFF, "category_id": 2, "isthing": False, "iscrowd": 0},
    {"id": SMALL, "category_id": 0, "isthing": True, "iscrowd": 0},
    {"id": ROUND, "category_id": 2, "isthing": True, "iscrowd": 0},
    {"id": CROWD, "category_id": 1, "isthing": True, "iscrowd": 1},
]


def _mapper():
    generator = PanopticDeepLabTargetGenerator(
        ignore_label=IGNORE, thing_ids=IDS.thing_ids, sigma=2, ignore_stuff_in_offset=True,
        small_instance_area=64, small_instance_weight=3, ignore_crowd_in_semantic=False,
    )  # fmt: skip
    return PanopticDeepLabDatasetMapper(
        True, augmentations=[], image_format="RGB", ids=IDS, target_generator=generator
    )


def test_targets_from_hand_built_panoptic_png(tmp_path):
    record, ids = _dataset_dict(tmp_path, SEGMENTS)
    out = _mapper()(record)

    expected_sem = np.full((H, W), IGNORE)
    expected_sem[ids == STUFF] = 4  # stuff 2 -> unified 3 + 2 - 1
    expected_sem[ids == SMALL] = 0
    expected_sem[ids == ROUND] = 2
    expected_sem[ids == CROWD] = 1  # crowd keeps its class (IGNORE_CROWD_IN_SEMANTIC False)
    assert np.array_equal(out["sem_seg"].numpy(), expected_sem)

    # Gaussian peaks (value 1) at the rounded centroids, crowd included (as the official code).
    center = out["center"].numpy()
    peaks = {(4, 6), (14, 16), (16, 2)}  # round() of (4.5, 5.5), (13.5, 16.5), (16.5, 1.5)
    assert {tuple(p) for p in np.argwhere(center == 1.0)} == peaks
    assert center[4, 6 + 7] > 0 and center[4, 6 + 8] == 0  # window: 3 sigma + 1 each side

    y, x = np.mgrid[0:H, 0:W]
    offset = out["offset"].numpy()
    for segment, (cy, cx) in ((SMALL, (4.5, 5.5)), (ROUND, (13.5, 16.5))):
        mask = ids == segment
        assert np.allclose(offset[0][mask], cy - y[mask]) and np.allclose(
            offset[1][mask], cx - x[mask]
        )
    assert not offset[:, ids == STUFF].any()

    non_crowd_things = (ids == SMALL) | (ids == ROUND)
    assert np.array_equal(
        out["offset_weights"][0].numpy(), non_crowd_things
    )  # no stuff, crowd, void
    assert np.array_equal(out["center_weights"][0].numpy(), non_crowd_things | (ids == STUFF))
    # Small-instance weight 3 on thing segments under 64 px: the 48 px one and the 16 px crowd.
    small = (ids == SMALL) | (ids == CROWD)
    assert np.array_equal(out["sem_seg_weights"].numpy(), np.where(small, 3.0, 1.0))
    assert "center_points" not in out and "pan_seg_file_name" not in out


def test_category_outside_config_is_an_annotation_error(tmp_path):
    segments = [dict(s) for s in SEGMENTS]
    segments[2]["category_id"] = 3  # only 3 thing classes configured
    record, _ = _dataset_dict(tmp_path, segments)
    with pytest.raises(AnnotationError, match="NUM_THING_CLASSES"):
        _mapper()(record)
