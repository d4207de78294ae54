#!/usr/bin/env python
"""
Time panoptic quality (PQ) on synthetic COCO panoptic files: panopticapi's ``pq_compute``,
hotcoco's Rust ``pq_compute`` (the ``bench`` extra: ``scripts/setup.sh --extra bench``)
and panoptic_zoo's, in file mode (reading both PNG folders) and in streaming mode (predictions in
memory, as the evaluator gets them from the model; ground-truth PNGs read), the latter in
``--threads`` threads and in one, PanopticEvaluator's pace. Checks that all agree, prints a table
and writes JSON.

    python tools/benchmark_pq.py                        # 200 images of 640x480, ~20 segments
    python tools/benchmark_pq.py --images 50 --repeats 1

Each time is the best of ``--repeats`` runs, wall clock, on however many cores the machine has
(panopticapi and hotcoco use all of them; panoptic_zoo ``--threads``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from panoptic_zoo.evaluation.panoptic_png import open_segment_ids
from panoptic_zoo.evaluation.pq import PanopticStats
from panoptic_zoo.evaluation.pq_compute import pq_compute, stats_in_threads
from panoptic_zoo.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
THINGS = [{"id": i, "name": f"thing{i}", "isthing": 1} for i in range(1, 11)]
STUFF = [{"id": i, "name": f"stuff{i}", "isthing": 0} for i in range(92, 102)]
CATEGORIES = THINGS + STUFF


def id_png(ids: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([ids & 255, (ids >> 8) & 255, ids >> 16], -1).astype(np.uint8))


def thing_mask(y, x, cy, cx, r, disc: bool) -> np.ndarray:
    if disc:
        return (y - cy) ** 2 + (x - cx) ** 2 < r * r
    return (abs(y - cy) < r) & (abs(x - cx) < 1.5 * r)


def synthetic_pair(rng, height: int, width: int, num_things: int):
    """
    Ground truth: 5 stuff bands with wavy borders, ``num_things`` discs and boxes (a few crowd),
    void blobs. Prediction: the same scene with shapes moved and resized, ~10% of things
    missed, ~10% of categories wrong, a false positive, less void.
    """
    y, x = np.mgrid[0:height, 0:width]
    ids = rng.choice(np.arange(1, 2**24), 2 * (num_things + 5) + 1, replace=False)
    gt, pred = np.zeros((height, width), np.uint32), np.zeros((height, width), np.uint32)
    gt_segments, pred_segments = [], []
    borders = np.sort(rng.integers(0, height, 4))
    for k, (top, bottom) in enumerate(zip([0, *borders], [*borders, height])):
        category = int(rng.choice([c["id"] for c in STUFF]))
        wave = (8 * np.sin(x / rng.uniform(20, 80))).astype(int)
        shift = int(rng.integers(-10, 11))
        gt[(y >= top + wave) & (y < bottom + wave)] = ids[2 * k]
        pred[(y >= top + wave + shift) & (y < bottom + wave + shift)] = ids[2 * k + 1]
        wrong = rng.random() < 0.1
        gt_segments.append((ids[2 * k], category, 0))
        pred_segments.append(
            (ids[2 * k + 1], int(rng.choice([c["id"] for c in STUFF])) if wrong else category)
        )
    for k in range(5, 5 + num_things):
        category = int(rng.choice([c["id"] for c in THINGS]))
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), int(rng.integers(8, 70))
        disc = rng.random() < 0.5
        gt[thing_mask(y, x, cy, cx, r, disc)] = ids[2 * k]
        gt_segments.append((ids[2 * k], category, int(rng.random() < 0.05)))
        if rng.random() < 0.9:
            dy, dx = rng.integers(-r // 3 - 1, r // 3 + 2, 2)
            r += int(rng.integers(-r // 4 - 1, r // 4 + 2))
            pred[thing_mask(y, x, cy + dy, cx + dx, r, disc)] = ids[2 * k + 1]
            wrong = rng.random() < 0.1
            pred_segments.append(
                (ids[2 * k + 1], int(rng.choice([c["id"] for c in THINGS])) if wrong else category)
            )
    false_positive = ids[-1]
    pred[thing_mask(y, x, rng.integers(0, height), rng.integers(0, width), 20, True)] = (
        false_positive
    )
    pred_segments.append((false_positive, THINGS[0]["id"]))
    for _ in range(3):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), int(rng.integers(5, 40))
        gt[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = 0
        pred[(y - cy) ** 2 + (x - cx) ** 2 < (r // 2) ** 2] = 0

    def info(id_map, segments, with_crowd):
        present, areas = np.unique(id_map, return_counts=True)
        area = dict(zip(present.tolist(), areas.tolist()))
        return [
            {"id": int(s[0]), "category_id": s[1], "area": area[s[0]],
             **({"iscrowd": s[2]} if with_crowd else {})}
            for s in segments if s[0] in area
        ]  # fmt: skip

    return gt, info(gt, gt_segments, True), pred, info(pred, pred_segments, False)


def write_dataset(root: Path, num_images: int, height: int, width: int, num_things: int, seed: int):
    """COCO panoptic files under ``root``; returns the in-memory predictions too."""
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir()
    (root / "pred").mkdir()
    images, gt_annotations, pred_annotations, predictions = [], [], [], []
    for image_id in range(num_images):
        gt, gt_info, pred, pred_info = synthetic_pair(rng, height, width, num_things)
        name = f"{image_id:06d}.png"
        id_png(gt).save(root / "gt" / name)
        id_png(pred).save(root / "pred" / name)
        images.append(
            {"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": height, "width": width}
        )
        gt_annotations.append({"image_id": image_id, "file_name": name, "segments_info": gt_info})
        pred_annotations.append(
            {"image_id": image_id, "file_name": name, "segments_info": pred_info}
        )
        predictions.append((pred, pred_info))
    for kind, image_annotations in (("gt", gt_annotations), ("pred", pred_annotations)):
        content = {"images": images, "annotations": image_annotations, "categories": CATEGORIES}
        (root / f"{kind}.json").write_text(json.dumps(content))
    return predictions


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic files' options, as :func:`write_dataset` takes them."""
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--things", type=int, default=15, help="plus 5 stuff segments")
    parser.add_argument("--seed", type=int, default=0)


def stream(root: Path, predictions, threads: int) -> dict:
    """Streaming mode: in-memory predictions to statistics, ground-truth PNGs read."""
    gt_json = json.loads((root / "gt.json").read_text())

    def add(stats: PanopticStats, item) -> None:
        ann, (pred_ids, pred_info) = item
        gt_ids = open_segment_ids((root / "gt" / ann["file_name"]).read_bytes())
        stats.add_image(gt_ids, ann["segments_info"], pred_ids, pred_info, ann["image_id"])

    items = list(zip(gt_json["annotations"], predictions))
    return stats_in_threads(items, add, gt_json["categories"], threads).pq_results()


def best_of(repeats: int, function):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # panopticapi's progress lines
            result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def max_difference(a: dict, b: dict) -> float:
    return max(
        abs(a[group][key] - b[group][key])
        for group in ("All", "Things", "Stuff")
        for key in ("pq", "sq", "rq")
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--threads", type=int, default=2, help="panoptic_zoo's threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-json", default=str(REPO / "output" / "benchmark_pq.json"))
    args = parser.parse_args(argv)

    from hotcoco.panoptic import pq_compute as hotcoco_pq_compute
    from panopticapi.evaluation import pq_compute as panopticapi_pq_compute

    with tempfile.TemporaryDirectory(prefix="benchmark_pq_") as tmp:
        root = Path(tmp)
        predictions = write_dataset(
            root, args.images, args.height, args.width, args.things, args.seed
        )
        files = [
            str(root / "gt.json"),
            str(root / "pred.json"),
            str(root / "gt"),
            str(root / "pred"),
        ]
        runs = {
            "panopticapi pq_compute": lambda: panopticapi_pq_compute(*files),
            "hotcoco 1.3.0 pq_compute": lambda: hotcoco_pq_compute(*files),
            "panoptic_zoo, file mode": lambda: pq_compute(*files, threads=args.threads),
            "panoptic_zoo, streaming": lambda: stream(root, predictions, args.threads),
            # PanopticEvaluator's own pace: one image at a time, as the model delivers them.
            "panoptic_zoo, streaming, 1 thread": lambda: stream(root, predictions, 1),
        }
        timings = {name: best_of(args.repeats, run) for name, run in runs.items()}

    reference_s, reference = timings["panopticapi pq_compute"]
    rows = [
        {"method": name, "seconds": seconds, "speed_up_vs_panopticapi": reference_s / seconds,
         "max_difference_vs_panopticapi": max_difference(result, reference)}
        for name, (seconds, result) in timings.items()
    ]  # fmt: skip
    report = {
        "settings": {**vars(args), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                     "python": platform.python_version()},
        "results": rows,
        "PQ": reference["All"]["pq"],
    }  # fmt: skip
    print(f"{args.images} images of {args.width}x{args.height}, ~{args.things + 5} segments each, "
          f"best of {args.repeats}, {os.cpu_count()} cores, load average "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))  # fmt: skip
    print(f"| {'method':33s} | seconds | speed-up vs panopticapi | max |diff| vs panopticapi |")
    print(f"| {'-' * 33} | ------: | ----------------------: | -----------------------: |")
    for row in rows:
        speed_up, difference = row["speed_up_vs_panopticapi"], row["max_difference_vs_panopticapi"]
        method, seconds = row["method"], row["seconds"]
        print(f"| {method:33s} | {seconds:7.3f} | {speed_up:22.1f}x | {difference:24.1e} |")
    atomic_write_json(args.output_json, report)
    print(f"written: {args.output_json}")
    return report


if __name__ == "__main__":
    main()
