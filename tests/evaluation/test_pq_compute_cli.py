"""The command line prints panopticapi's table and writes its numbers, from the same files."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from panoptic_cases import CATEGORIES, assert_same_pq, panopticapi_pq, write_case

from panoptic_zoo.evaluation.pq_compute import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def random_case(tmp_path, num_images=6, seed=0):
    """Block images of every category; predictions are the ground truth with blocks relabelled."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        height, width = rng.integers(20, 40, 2)
        ids = rng.integers(1, 2**24, 6)
        blocks = rng.choice(np.append(ids, 0), (4, 4))
        gt_ids = np.kron(blocks, np.ones((10, 10), np.int64))[:height, :width].astype(np.uint32)
        gt_segments = [
            {"id": int(i), "category_id": int(rng.choice([c["id"] for c in CATEGORIES])),
             "iscrowd": int(rng.random() < 0.2), "area": int((gt_ids == i).sum())}
            for i in ids if (gt_ids == i).any()
        ]  # fmt: skip
        pred_ids = gt_ids.copy()
        pred_ids[rng.integers(0, height) :, : rng.integers(0, width)] = 77
        gt_category = {s["id"]: s["category_id"] for s in gt_segments}
        pred_segments = [
            {"id": int(i), "category_id": gt_category.get(i, 9)} for i in np.unique(pred_ids) if i
        ]
        images.append((gt_ids, gt_segments, pred_ids, pred_segments))
    return write_case(tmp_path, images)


def test_table_and_json_match_panopticapi(tmp_path):
    case = random_case(tmp_path)
    output_json = tmp_path / "results.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # The PNG folders default to the JSON paths without ".json", as in panopticapi.
        main(["--gt_json_file", case["gt_json_file"], "--pred_json_file", case["pred_json_file"],
              "--output_json", str(output_json)])  # fmt: skip

    from panopticapi.evaluation import pq_compute

    reference_printed = io.StringIO()
    with contextlib.redirect_stdout(reference_printed):
        pq_compute(
            case["gt_json_file"], case["pred_json_file"], case["gt_folder"], case["pred_folder"]
        )

    def table(text):
        lines = text.splitlines()
        start = next(k for k, line in enumerate(lines) if line.strip().startswith("| "))
        return lines[start : start + 5]

    assert table(printed.getvalue()) == table(reference_printed.getvalue())
    written = json.loads(output_json.read_text())
    written["per_class"] = {int(k): v for k, v in written["per_class"].items()}
    assert_same_pq(written, panopticapi_pq(case))


def test_explicit_folders_and_threads(tmp_path):
    case = random_case(tmp_path, seed=1)
    output_json = tmp_path / "results.json"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--gt_json_file", case["gt_json_file"], "--pred_json_file", case["pred_json_file"],
              "--gt_folder", case["gt_folder"], "--pred_folder", case["pred_folder"],
              "--threads", "3", "--output_json", str(output_json)])  # fmt: skip
    written = json.loads(output_json.read_text())
    written["per_class"] = {int(k): v for k, v in written["per_class"].items()}
    assert_same_pq(written, panopticapi_pq(case))


def test_command_line_loads_neither_torch_nor_detectron2(tmp_path):
    # What makes the command start fast: panoptic_zoo and panoptic_zoo.evaluation load lazily.
    case = random_case(tmp_path, num_images=2, seed=2)
    script = (
        "import sys\n"
        "from panoptic_zoo.evaluation.pq_compute import main\n"
        f"main(['--gt_json_file', {case['gt_json_file']!r}, "
        f"'--pred_json_file', {case['pred_json_file']!r}])\n"
        "print('loaded:', sorted(m for m in ('torch', 'detectron2') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert "PQ" in run.stdout
    assert run.stdout.splitlines()[-1] == "loaded: []"
