"""
Panoptic evaluation cases as COCO panoptic files, and panopticapi's own PQ on them: the
reference every test of panoptic_zoo.evaluation compares to.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

# Two thing and two stuff categories with non-contiguous ids, as in real datasets.
CATEGORIES = [
    {"id": 1, "name": "disc", "isthing": 1},
    {"id": 3, "name": "box", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 9, "name": "ground", "isthing": 0},
]


def id_png(ids: np.ndarray) -> Image.Image:
    """The COCO panoptic PNG of a segment-id map (id = R + 256 G + 256**2 B)."""
    ids = np.asarray(ids, np.uint32)
    return Image.fromarray(np.stack([ids & 255, (ids >> 8) & 255, ids >> 16], -1).astype(np.uint8))


def write_case(root: Path, images, categories=CATEGORIES) -> dict:
    """
    Write ``images``, a list of ``(gt_ids, gt_segments, pred_ids, pred_segments)``, as COCO
    panoptic files under ``root``; returns the JSON contents and the paths.
    """
    gt_folder, pred_folder = root / "gt", root / "pred"
    gt_folder.mkdir(parents=True)
    pred_folder.mkdir()
    gt_annotations, pred_annotations, image_infos = [], [], []
    for image_id, (gt_ids, gt_segments, pred_ids, pred_segments) in enumerate(images):
        name = f"{image_id:04d}.png"
        id_png(gt_ids).save(gt_folder / name)
        id_png(pred_ids).save(pred_folder / name)
        height, width = np.shape(gt_ids)
        image_infos.append({"id": image_id, "file_name": f"{image_id:04d}.jpg", "height": height,
                            "width": width})  # fmt: skip
        gt_annotations.append(
            {"image_id": image_id, "file_name": name, "segments_info": gt_segments}
        )
        pred_annotations.append(
            {"image_id": image_id, "file_name": name, "segments_info": pred_segments}
        )
    gt_json = {"images": image_infos, "annotations": gt_annotations, "categories": categories}
    pred_json = {"images": image_infos, "annotations": pred_annotations, "categories": categories}
    (root / "gt.json").write_text(json.dumps(gt_json))
    (root / "pred.json").write_text(json.dumps(pred_json))
    return {
        "gt_json": gt_json, "pred_json": pred_json, "gt_folder": str(gt_folder),
        "pred_folder": str(pred_folder), "gt_json_file": str(root / "gt.json"),
        "pred_json_file": str(root / "pred.json"),
    }  # fmt: skip


def panopticapi_pq(case: dict) -> dict:
    """
    panopticapi's ``pq_compute`` on ``case`` in this process (its per-core function, no pool).
    A group whose average divides by zero in panopticapi is None; ``per_class`` is None when
    even "All" does.
    """
    from panopticapi.evaluation import pq_compute_single_core

    categories = {c["id"]: c for c in case["gt_json"]["categories"]}
    predictions = {a["image_id"]: a for a in case["pred_json"]["annotations"]}
    # panopticapi writes areas into the prediction annotations: give it copies.
    pairs = copy.deepcopy([(a, predictions[a["image_id"]]) for a in case["gt_json"]["annotations"]])
    with contextlib.redirect_stdout(io.StringIO()):
        stat = pq_compute_single_core(0, pairs, case["gt_folder"], case["pred_folder"], categories)
    results = {"per_class": None}
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            results[group], per_class = stat.pq_average(categories, isthing=isthing)
        except ZeroDivisionError:
            results[group] = None
            continue
        if isthing is None:
            results["per_class"] = per_class
    return results


def assert_same_pq(ours: dict, reference: dict, tolerance: float = 1e-12) -> None:
    """Our ``pq_results()`` equals panopticapi's (NaN where panopticapi divides by zero)."""
    for group in ("All", "Things", "Stuff"):
        if reference[group] is None:
            assert ours[group]["n"] == 0 and np.isnan(ours[group]["pq"]), group
            continue
        assert ours[group]["n"] == reference[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert abs(ours[group][key] - reference[group][key]) <= tolerance, (group, key)
    expected = reference["per_class"] or {
        c: {"pq": 0.0, "sq": 0.0, "rq": 0.0} for c in ours["per_class"]
    }
    assert set(ours["per_class"]) == set(expected)
    for category, values in expected.items():
        for key in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][category][key] - values[key]) <= tolerance
