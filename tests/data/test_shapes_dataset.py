"""
The shapes generator: every file agrees with every other, recomputed here independently
with numpy and pycocotools, and generation is deterministic and atomic.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from panoptic_zoo.data.datasets.shapes import (
    SHAPES_CATEGORIES,
    ShapesSpec,
    default_shapes_root,
    ensure_shapes_dataset,
    generate_shapes_dataset,
)

SPEC = ShapesSpec(seed=3, splits=(("train", 10), ("val", 4)), min_size=64, max_size=112)
THING_IDS = {c["id"] for c in SHAPES_CATEGORIES if c["isthing"]}
STUFF_IDS = sorted(c["id"] for c in SHAPES_CATEGORIES if not c["isthing"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "ds"
    generate_shapes_dataset(root, SPEC)
    return root


def _segment_ids(png: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _tight_bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_png_json_semantic_and_instances_agree(dataset, split):
    panoptic = json.loads((dataset / f"panoptic_{split}.json").read_text())
    instances = json.loads((dataset / f"instances_{split}.json").read_text())
    assert [c["id"] for c in panoptic["categories"]] == [c["id"] for c in SHAPES_CATEGORIES]
    assert {c["id"] for c in instances["categories"]} == THING_IDS
    images = {im["id"]: im for im in panoptic["images"]}
    assert len(images) == len(panoptic["annotations"]) == dict(SPEC.splits)[split]
    instances_by_image = {}
    for ann in instances["annotations"]:
        instances_by_image.setdefault(ann["image_id"], []).append(ann)

    for ann in panoptic["annotations"]:
        image = images[ann["image_id"]]
        ids = _segment_ids(dataset / f"panoptic_{split}" / ann["file_name"])
        photo = Image.open(dataset / "images" / split / image["file_name"])
        assert photo.mode == "RGB"
        assert photo.size == (image["width"], image["height"]) == ids.shape[::-1]

        segments = {s["id"]: s for s in ann["segments_info"]}
        assert len(segments) == len(ann["segments_info"]), "segment ids are unique"
        assert set(np.unique(ids).tolist()) - {0} == set(segments)
        expected_semantic = np.full(ids.shape, 255, np.uint8)
        for seg_id, seg in segments.items():
            mask = ids == seg_id
            assert seg["area"] == int(mask.sum()) > 0
            assert seg["bbox"] == _tight_bbox(mask)
            if seg["category_id"] in THING_IDS:
                expected_semantic[mask] = 0
            else:
                assert seg["iscrowd"] == 0, "only things can be crowd"
                expected_semantic[mask] = 1 + STUFF_IDS.index(seg["category_id"])
        stuff_categories = [s["category_id"] for s in segments.values() if s["category_id"] not in THING_IDS]
        assert len(stuff_categories) == len(set(stuff_categories)), "one segment per stuff class"
        semantic = np.asarray(Image.open(dataset / f"panoptic_stuff_{split}" / ann["file_name"]))
        np.testing.assert_array_equal(semantic, expected_semantic)

        things = {s["id"]: s for s in segments.values() if s["category_id"] in THING_IDS}
        coco = instances_by_image.get(ann["image_id"], [])
        assert len(coco) == len(things)
        for inst in coco:
            decoded = mask_utils.decode(inst["segmentation"]).astype(bool)
            matches = [sid for sid in things if np.array_equal(decoded, ids == sid)]
            assert len(matches) == 1, "each instance mask is exactly one panoptic segment"
            seg = things[matches[0]]
            assert (inst["category_id"], inst["iscrowd"]) == (seg["category_id"], seg["iscrowd"])
            assert inst["area"] == seg["area"] and inst["bbox"] == seg["bbox"]


def test_content_has_crowd_void_holes_and_varied_sizes(tmp_path):
    spec = ShapesSpec(seed=1, splits=(("train", 40),))
    root = tmp_path / "mid"
    generate_shapes_dataset(root, spec)
    panoptic = json.loads((root / "panoptic_train.json").read_text())
    sizes = {(im["width"], im["height"]) for im in panoptic["images"]}
    assert len(sizes) > 20 and all(96 <= w <= 160 and 96 <= h <= 160 for w, h in sizes)
    crowd = void = rings_with_holes = 0
    thing_areas = []
    ring_id = next(c["id"] for c in SHAPES_CATEGORIES if c["name"] == "ring")
    for ann in panoptic["annotations"]:
        ids = _segment_ids(root / "panoptic_train" / ann["file_name"])
        void += bool((ids == 0).any())
        for seg in ann["segments_info"]:
            crowd += seg["iscrowd"]
            if seg["category_id"] in THING_IDS and not seg["iscrowd"]:
                thing_areas.append(seg["area"])
            if seg["category_id"] == ring_id:
                x, y, w, h = seg["bbox"]
                cy, cx = y + h // 2, x + w // 2
                rings_with_holes += ids[cy, cx] != seg["id"]  # the centre shows what lies behind
    assert crowd >= 2 and void >= 4 and rings_with_holes >= 1
    assert min(thing_areas) < 100 and max(thing_areas) > 1500, "tiny and large things"


def test_generation_is_deterministic_and_seeded(tmp_path):
    spec = ShapesSpec(seed=9, splits=(("val", 3),), min_size=64, max_size=80)
    generate_shapes_dataset(tmp_path / "a", spec)
    generate_shapes_dataset(tmp_path / "b", spec)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 3  # jpg + panoptic png + semantic png per image; 2 JSON + DONE
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert not mismatch and not errors
    other = ShapesSpec(seed=10, splits=(("val", 3),), min_size=64, max_size=80)
    generate_shapes_dataset(tmp_path / "c", other)
    assert (tmp_path / "a" / "panoptic_val.json").read_bytes() != (
        tmp_path / "c" / "panoptic_val.json").read_bytes()  # fmt: skip


def test_ensure_is_idempotent_and_repairs_an_incomplete_dataset(tmp_path, monkeypatch):
    spec = ShapesSpec(seed=2, splits=(("val", 2),), min_size=64, max_size=80)
    monkeypatch.setenv("PANOPTIC_ZOO_DATASETS", str(tmp_path))
    root = ensure_shapes_dataset(spec=spec)
    assert root == default_shapes_root(spec) and root.parent == tmp_path
    done = root / "DONE"
    first = done.stat().st_mtime_ns
    assert ensure_shapes_dataset(spec=spec) == root and done.stat().st_mtime_ns == first
    done.unlink()  # as if a generator had died before finishing
    ensure_shapes_dataset(spec=spec)
    assert done.is_file() and json.loads(done.read_text())["spec"]["seed"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left behind"
    assert default_shapes_root(ShapesSpec(seed=3)) != default_shapes_root(spec)


def test_never_deletes_a_foreign_directory(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="does not look like a shapes dataset"):
        generate_shapes_dataset(foreign, ShapesSpec(splits=(("val", 1),), min_size=64, max_size=64))
    assert (foreign / "thesis.tex").read_text() == "precious"
