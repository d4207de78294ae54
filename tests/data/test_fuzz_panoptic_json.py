"""
Fuzzing the COCO-panoptic JSON loader: a valid annotation file of the tiny shapes dataset with a
field deleted, set to a value of any JSON type, or the file's bytes damaged. Loading either raises
a clear error naming the JSON file, or returns records, which then map (through Panoptic FPN's
mapper without augmentation) to the targets the records and PNGs describe, or raise a clear error
naming a file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fuzz_testing import (
    corrupt,
    fuzz_settings,
    fuzz_tally,  # noqa: F401  (fixture)
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from panoptic_zoo.data.datasets import load_panoptic_json
from panoptic_zoo.data.datasets.panoptic import separated_metadata
from panoptic_zoo.data.datasets.shapes import SHAPES_CATEGORIES
from panoptic_zoo.data.mappers import COCOPanopticDatasetMapper

METADATA = separated_metadata(SHAPES_CATEGORIES)
MAPPER = COCOPanopticDatasetMapper(True, augmentations=[], image_format="BGR", ignore_label=255)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


@pytest.fixture(scope="module")
def valid(tiny_shapes) -> dict:
    root = Path(tiny_shapes["root"])
    return {
        "root": root,
        "content": json.loads((root / "panoptic_train.json").read_text()),
    }


def paths_in(content) -> list[tuple]:
    """The field paths of ``content`` (however mutated already) down to segments_info fields."""
    paths = [()]

    def walk(node, path, depth):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            paths.append((*path, key))
            if depth > 1 and isinstance(child, (dict, list)):
                walk(child, (*path, key), depth - 1)

    if isinstance(content, (dict, list)):
        walk(content, (), 6)  # annotations/i/segments_info/j/key is 5 deep
    return paths


def mutate(content, path: tuple, action: str, value):
    """``content`` with the field at ``path`` deleted or replaced (the root is only replaced)."""
    if not path:
        return value
    parent = content
    for step in path[:-1]:
        parent = parent[step]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return content


def read_ids(png: str) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def load_and_map(json_file: Path, root: Path) -> None:
    records = load_panoptic_json(
        str(json_file), str(root / "images" / "train"), str(root / "panoptic_train"), METADATA
    )
    for record in records:
        out = MAPPER(record)
        # The oracle: what the record (as loaded) and its PNG say.
        ids = read_ids(record["pan_seg_file_name"])
        expected = np.full(ids.shape, 255)
        for s in record["segments_info"]:
            expected[ids == s["id"]] = 0 if s["isthing"] else s["category_id"]
        assert np.array_equal(out["sem_seg"].numpy(), expected)
        things = [s["category_id"] for s in record["segments_info"]
                  if s["isthing"] and not s["iscrowd"]]  # fmt: skip
        assert out["instances"].gt_classes.tolist() == things


@fuzz_settings(default_examples=150)
@given(data=st.data())
def test_loader_on_mutated_json(valid, fuzz_tally, data):
    content = json.loads(json.dumps(valid["content"]))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = paths_in(content)
        path = data.draw(st.sampled_from(paths), label="path")
        action = data.draw(st.sampled_from(["delete", "replace"]), label="action")
        content = mutate(content, path, action, data.draw(json_values, label="value"))
    with tempfile.TemporaryDirectory() as directory:
        json_file = Path(directory) / "panoptic_train.json"
        json_file.write_text(json.dumps(content))
        fuzz_tally.expect(
            "either", lambda: load_and_map(json_file, valid["root"]),
            files=[json_file, valid["root"]],
        )  # fmt: skip


@fuzz_settings(default_examples=40)
@given(how=st.sampled_from(["truncated", "bit_flipped"]), fraction=st.floats(0, 0.999),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_loader_on_damaged_json_bytes(valid, fuzz_tally, how, fraction, seed):
    data = corrupt(json.dumps(valid["content"]).encode(), how, fraction, seed)
    with tempfile.TemporaryDirectory() as directory:
        json_file = Path(directory) / "panoptic_train.json"
        json_file.write_bytes(data)
        fuzz_tally.expect(
            "either", lambda: load_and_map(json_file, valid["root"]),
            files=[json_file, valid["root"]],
        )  # fmt: skip
