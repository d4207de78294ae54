"""Tests of the procedural shapes panoptic dataset generator.

Every expected value (areas, boxes, semantic labels, masks) is recomputed here from the
files on disk with plain numpy/pycocotools, never with the generator's own helpers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from panoptic_zoo.data.datasets.shapes import (
    GENERATOR_VERSION,
    SHAPES_CATEGORIES,
    ShapesSpec,
    ensure_shapes_dataset,
    generate_shapes_dataset,
)

SMALL_SPEC = ShapesSpec(seed=3, splits=(("train", 6), ("val", 4)))
TINY_SPEC = ShapesSpec(seed=5, splits=(("train", 3), ("val", 2)))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "small"
    generate_shapes_dataset(root, SMALL_SPEC)
    return root


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _read_ids(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        rgb = np.asarray(image).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _tight_bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]


def _iter_annotations(
    root: Path, split: str
) -> Iterator[tuple[dict[str, Any], dict[str, Any], np.ndarray]]:
    """Yields (image entry, panoptic annotation, segment-id map) for every image of a split."""
    panoptic = _load_json(root / f"panoptic_{split}.json")
    images = {image["id"]: image for image in panoptic["images"]}
    assert len(images) == len(panoptic["images"]) == len(panoptic["annotations"])
    for annotation in panoptic["annotations"]:
        ids = _read_ids(root / f"panoptic_{split}" / annotation["file_name"])
        yield images[annotation["image_id"]], annotation, ids


def _relative_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _has_enclosed_hole(mask: np.ndarray) -> bool:
    """True if some non-mask pixel cannot reach the outside of the mask's box (4-connected)."""
    ys, xs = np.nonzero(mask)
    crop = np.pad(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], 1)
    outside = np.zeros_like(crop)
    outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~crop
        if np.array_equal(grown, outside):
            return bool((~crop & ~outside).any())
        outside = grown


def test_categories_are_non_contiguous_and_distinct() -> None:
    ids = [c["id"] for c in SHAPES_CATEGORIES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids != list(range(ids[0], ids[0] + len(ids)))
    assert {c["isthing"] for c in SHAPES_CATEGORIES} == {0, 1}
    assert len({c["name"] for c in SHAPES_CATEGORIES}) == len(ids)
    assert len({tuple(c["color"]) for c in SHAPES_CATEGORIES}) == len(ids)
    names = {c["name"] for c in SHAPES_CATEGORIES if c["isthing"]}
    assert {"disc", "triangle", "box", "ring", "star"} <= names


def test_layout_and_done_marker(small_dataset: Path) -> None:
    for split, count in SMALL_SPEC.splits:
        stems = [f"{image_id:06d}" for image_id in range(1, count + 1)]
        assert sorted(p.name for p in (small_dataset / "images" / split).iterdir()) == [
            f"{s}.jpg" for s in stems
        ]
        assert sorted(p.name for p in (small_dataset / f"panoptic_{split}").iterdir()) == [
            f"{s}.png" for s in stems
        ]
        assert sorted(p.name for p in (small_dataset / f"panoptic_stuff_{split}").iterdir()) == [
            f"{s}.png" for s in stems
        ]
        for name in (f"panoptic_{split}.json", f"instances_{split}.json"):
            assert (small_dataset / name).is_file()
    done = _load_json(small_dataset / "DONE")
    assert done["generator_version"] == GENERATOR_VERSION
    assert done["spec"]["seed"] == SMALL_SPEC.seed
    assert done["spec"]["splits"] == [["train", 6], ["val", 4]]
    # The staging directory was renamed into place, nothing left beside it.
    assert sorted(p.name for p in small_dataset.parent.iterdir()) == ["small"]


def test_panoptic_png_matches_segments_info(small_dataset: Path) -> None:
    categories = {c["id"]: c for c in SHAPES_CATEGORIES}
    for split, _ in SMALL_SPEC.splits:
        for _, annotation, ids in _iter_annotations(small_dataset, split):
            segment_ids = [s["id"] for s in annotation["segments_info"]]
            assert len(segment_ids) == len(set(segment_ids)), "segment ids must be unique per image"
            png_ids = set(np.unique(ids).tolist()) - {0}
            assert png_ids == set(segment_ids)
            for segment in annotation["segments_info"]:
                mask = ids == segment["id"]
                assert segment["category_id"] in categories
                assert segment["area"] == int(mask.sum()) > 0
                assert segment["bbox"] == _tight_bbox(mask)
                assert segment["iscrowd"] in (0, 1)
                if segment["iscrowd"]:
                    assert categories[segment["category_id"]]["isthing"] == 1
            stuff = [
                s["category_id"]
                for s in annotation["segments_info"]
                if not categories[s["category_id"]]["isthing"]
            ]
            assert len(stuff) == len(set(stuff)), "one segment per stuff class"


def test_image_sizes_agree_with_files(small_dataset: Path) -> None:
    sizes = set()
    for split, _ in SMALL_SPEC.splits:
        for image, annotation, ids in _iter_annotations(small_dataset, split):
            assert image["file_name"] == annotation["file_name"].replace(".png", ".jpg")
            expected = (image["width"], image["height"])
            with Image.open(small_dataset / "images" / split / image["file_name"]) as jpeg:
                assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
                assert jpeg.size == expected
            with Image.open(
                small_dataset / f"panoptic_stuff_{split}" / annotation["file_name"]
            ) as semantic:
                assert semantic.size == expected
            assert ids.shape == (image["height"], image["width"])
            assert SMALL_SPEC.min_size <= min(expected) <= max(expected) <= SMALL_SPEC.max_size
            sizes.add(expected)
    assert len(sizes) > 1, "image sizes should vary"


def test_semantic_png_is_derived_from_panoptic(small_dataset: Path) -> None:
    for split, _ in SMALL_SPEC.splits:
        panoptic = _load_json(small_dataset / f"panoptic_{split}.json")
        stuff_ids = sorted(c["id"] for c in panoptic["categories"] if c["isthing"] == 0)
        thing_ids = {c["id"] for c in panoptic["categories"] if c["isthing"] == 1}
        for _, annotation, ids in _iter_annotations(small_dataset, split):
            expected = np.full(ids.shape, 255, dtype=np.uint8)
            for segment in annotation["segments_info"]:
                if segment["category_id"] in thing_ids:
                    expected[ids == segment["id"]] = 0
                else:
                    expected[ids == segment["id"]] = 1 + stuff_ids.index(segment["category_id"])
            with Image.open(
                small_dataset / f"panoptic_stuff_{split}" / annotation["file_name"]
            ) as semantic:
                assert semantic.mode == "L"
                np.testing.assert_array_equal(np.asarray(semantic), expected)


def test_json_categories(small_dataset: Path) -> None:
    expected = [(c["id"], c["name"], c["isthing"], list(c["color"])) for c in SHAPES_CATEGORIES]
    for split, _ in SMALL_SPEC.splits:
        panoptic = _load_json(small_dataset / f"panoptic_{split}.json")
        instances = _load_json(small_dataset / f"instances_{split}.json")
        assert [
            (c["id"], c["name"], c["isthing"], c["color"]) for c in panoptic["categories"]
        ] == expected
        assert [c["id"] for c in instances["categories"]] == [c[0] for c in expected if c[2] == 1]
        assert instances["images"] == panoptic["images"]


def test_instances_match_panoptic_things(small_dataset: Path) -> None:
    for split, _ in SMALL_SPEC.splits:
        panoptic = _load_json(small_dataset / f"panoptic_{split}.json")
        thing_ids = {c["id"] for c in panoptic["categories"] if c["isthing"] == 1}
        instances = _load_json(small_dataset / f"instances_{split}.json")
        annotation_ids = [a["id"] for a in instances["annotations"]]
        assert len(annotation_ids) == len(set(annotation_ids))
        by_image: dict[int, list[dict[str, Any]]] = {}
        for annotation in instances["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)

        for image, annotation, ids in _iter_annotations(small_dataset, split):
            things = {
                s["id"]: s for s in annotation["segments_info"] if s["category_id"] in thing_ids
            }
            matched = set()
            for instance in by_image.get(image["id"], []):
                assert isinstance(instance["segmentation"]["counts"], str)
                mask = mask_utils.decode(instance["segmentation"]).astype(bool)
                assert mask.shape == ids.shape
                under = np.unique(ids[mask])
                assert under.size == 1, "an instance mask must cover exactly one panoptic segment"
                segment = things[int(under[0])]
                np.testing.assert_array_equal(mask, ids == segment["id"])
                assert instance["category_id"] == segment["category_id"]
                assert instance["iscrowd"] == segment["iscrowd"]
                assert instance["area"] == int(mask.sum())
                assert instance["bbox"] == _tight_bbox(mask)
                matched.add(segment["id"])
            assert matched == set(things), "exactly one instance annotation per thing segment"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = generate_shapes_dataset(tmp_path / "a", TINY_SPEC)
    second = generate_shapes_dataset(tmp_path / "b", TINY_SPEC)
    assert first == second
    files_a, files_b = _relative_files(tmp_path / "a"), _relative_files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] == files_b[name], name

    generate_shapes_dataset(
        tmp_path / "c", ShapesSpec(seed=TINY_SPEC.seed + 1, splits=TINY_SPEC.splits)
    )
    files_c = _relative_files(tmp_path / "c")
    assert files_c["panoptic_train.json"] != files_a["panoptic_train.json"]
    for name in files_a:
        if name.endswith(".png") or name.endswith(".jpg"):
            assert files_a[name] != files_c[name], name


def test_splits_use_different_seeds(small_dataset: Path) -> None:
    train = _read_ids(small_dataset / "panoptic_train" / "000001.png")
    val = _read_ids(small_dataset / "panoptic_val" / "000001.png")
    assert train.shape != val.shape or not np.array_equal(train, val)
    assert (small_dataset / "images/train/000001.jpg").read_bytes() != (
        small_dataset / "images/val/000001.jpg"
    ).read_bytes()


def test_ensure_is_idempotent_and_repairs_missing_marker(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    assert ensure_shapes_dataset(root, TINY_SPEC) == root
    done = root / "DONE"
    stamp = done.stat().st_mtime_ns
    assert ensure_shapes_dataset(root, TINY_SPEC) == root
    assert done.stat().st_mtime_ns == stamp, "second call must not regenerate"

    reference = _relative_files(root)
    done.unlink()
    (root / "panoptic_train.json").unlink()  # a damaged, unmarked dataset
    assert ensure_shapes_dataset(root, TINY_SPEC) == root
    assert _relative_files(root) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_ensure_regenerates_for_another_spec(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    ensure_shapes_dataset(root, TINY_SPEC)
    other = ShapesSpec(seed=TINY_SPEC.seed, splits=(("train", 2),))
    ensure_shapes_dataset(root, other)
    assert _load_json(root / "DONE")["spec"]["splits"] == [["train", 2]]
    assert not (root / "panoptic_val.json").exists()
    assert len(list((root / "images" / "train").iterdir())) == 2


def test_default_root_respects_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_a = ShapesSpec(seed=1, splits=(("train", 1),))
    spec_b = ShapesSpec(seed=2, splits=(("train", 1),))
    name_pattern = re.compile(rf"^shapes-v{GENERATOR_VERSION}-[0-9a-f]+$")

    monkeypatch.setenv("PANOPTIC_ZOO_DATASETS", str(tmp_path / "datasets"))
    root_a = ensure_shapes_dataset(spec=spec_a)
    root_b = ensure_shapes_dataset(spec=spec_b)
    assert root_a.parent == root_b.parent == tmp_path / "datasets"
    assert name_pattern.match(root_a.name) and name_pattern.match(root_b.name)
    assert root_a != root_b
    assert (root_a / "DONE").is_file() and (root_b / "DONE").is_file()

    monkeypatch.delenv("PANOPTIC_ZOO_DATASETS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root_xdg = ensure_shapes_dataset(spec=spec_a)
    assert root_xdg == tmp_path / "xdg" / "panoptic_zoo" / "datasets" / root_a.name
    assert (root_xdg / "DONE").is_file()


def test_concurrent_generation_of_one_root(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: generate_shapes_dataset(root, TINY_SPEC), range(3)))
    assert results[0] == results[1] == results[2]
    generate_shapes_dataset(tmp_path / "reference", TINY_SPEC)
    assert _relative_files(root) == _relative_files(tmp_path / "reference")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "reference"]


def test_refuses_to_replace_unrelated_directory(tmp_path: Path) -> None:
    root = tmp_path / "precious"
    root.mkdir()
    (root / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError):
        generate_shapes_dataset(root, TINY_SPEC)
    assert (root / "notes.txt").read_text() == "not a dataset"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_spec_accepts_mapping_and_validates() -> None:
    assert ShapesSpec(splits={"train": 2, "val": 1}) == ShapesSpec(
        splits=(("train", 2), ("val", 1))
    )
    assert ShapesSpec().short_hash() == ShapesSpec().short_hash() != ShapesSpec(seed=1).short_hash()
    with pytest.raises(ValueError):
        ShapesSpec(splits=(("../evil", 1),))
    with pytest.raises(ValueError):
        ShapesSpec(min_size=200, max_size=100)


def test_train_split_has_crowd_void_holes_and_varied_things(tmp_path: Path) -> None:
    spec = ShapesSpec(splits=(("train", 300),))  # the default train split
    root = tmp_path / "default_train"
    generate_shapes_dataset(root, spec)
    categories = {c["id"]: c for c in SHAPES_CATEGORIES}
    ring_id = next(c["id"] for c in SHAPES_CATEGORIES if c["name"] == "ring")

    images_with_crowd = images_with_void = rings_with_hole = images_with_touching = 0
    thing_areas: list[float] = []  # relative to image area
    thing_classes, stuff_counts = set(), set()
    for _, annotation, ids in _iter_annotations(root, "train"):
        segments = annotation["segments_info"]
        images_with_crowd += any(s["iscrowd"] for s in segments)
        images_with_void += bool((ids == 0).any())
        things = [s for s in segments if categories[s["category_id"]]["isthing"]]
        stuff = [s for s in segments if not categories[s["category_id"]]["isthing"]]
        stuff_counts.add(len(stuff))
        for segment in things:
            assert segment["area"] >= spec.min_thing_area
            thing_areas.append(segment["area"] / ids.size)
            thing_classes.add(segment["category_id"])
            if segment["category_id"] == ring_id and not segment["iscrowd"]:
                rings_with_hole += _has_enclosed_hole(ids == segment["id"])
        if len(stuff) > 1:
            assert min(s["area"] for s in stuff) >= spec.min_stuff_area
        # Two different thing segments sharing an edge.
        thing_map = np.isin(ids, [s["id"] for s in things])
        horizontal = thing_map[:, 1:] & thing_map[:, :-1] & (ids[:, 1:] != ids[:, :-1])
        vertical = thing_map[1:] & thing_map[:-1] & (ids[1:] != ids[:-1])
        images_with_touching += bool(horizontal.any() or vertical.any())

    assert 0.1 * 300 <= images_with_crowd <= 0.3 * 300
    assert images_with_void >= 30
    assert rings_with_hole >= 20
    assert images_with_touching >= 30
    assert thing_classes == {c["id"] for c in SHAPES_CATEGORIES if c["isthing"]}
    assert min(thing_areas) < 0.003 and max(thing_areas) > 0.1, "tiny and large things"
    assert max(stuff_counts) >= 3
