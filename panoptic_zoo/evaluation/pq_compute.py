"""
panopticapi's ``pq_compute`` on COCO panoptic files, fast: same arguments, same numbers (to
rounding, see :mod:`.pq`), same table.

    python -m panoptic_zoo.evaluation.pq_compute \\
        --gt_json_file gt.json --pred_json_file pred.json [--gt_folder DIR] [--pred_folder DIR] \\
        [--output_json results.json] [--threads N]
    python -m panoptic_zoo.evaluation.pq_compute --dataset photos \\
        --config-file configs/photos/panoptic_fpn_R_18.yaml --pred_json_file pred.json

With ``--dataset NAME``, the ground truth is a registered dataset's panoptic JSON and PNGs: a
builtin one, or one of ``--config-file``'s DATASETS.REGISTER.

As in panopticapi, a PNG folder defaults to its JSON file's path without ``.json``, every
ground-truth annotation needs a prediction for its ``image_id`` and extra predictions are
ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..utils.io import atomic_write_json
from .panoptic_png import open_segment_ids
from .pq import PanopticStats, format_pq_table

__all__ = ["evaluate_panoptic_files", "pq_compute", "stats_in_threads"]


def _annotation_pairs(gt_json: dict, pred_json: dict) -> list[tuple[dict, dict]]:
    predictions = {ann["image_id"]: ann for ann in pred_json["annotations"]}
    pairs = []
    for gt_ann in gt_json["annotations"]:
        if gt_ann["image_id"] not in predictions:
            raise ValueError(f"no prediction for the image with id {gt_ann['image_id']!r}")
        pairs.append((gt_ann, predictions[gt_ann["image_id"]]))
    return pairs


def stats_in_threads(
    items: Sequence, add: Callable[[PanopticStats, Any], None], categories: list, threads: int
) -> PanopticStats:
    """
    ``add(stats, item)`` for every item, in ``threads`` threads over contiguous parts of
    ``items``, and the sum of their statistics. PNG inflation and the pixel kernel release the
    GIL, so threads overlap; forked processes measured slower from the evaluator, whose process
    has torch and detectron2 loaded.
    """

    def part_stats(part: Sequence) -> PanopticStats:
        stats = PanopticStats(categories)
        for item in part:
            add(stats, item)
        return stats

    threads = max(1, min(threads, len(items)))
    bounds = [len(items) * i // threads for i in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(part_stats, [items[start:end] for start, end in zip(bounds, bounds[1:])])
        return sum(parts, PanopticStats(categories))


def _open_png(path: str):
    with open(path, "rb") as f:
        return open_segment_ids(f.read(), path)


def evaluate_panoptic_files(
    gt_json: dict, pred_json: dict, gt_folder: str, pred_folder: str, threads: int = 2
) -> PanopticStats:
    """
    The :class:`PanopticStats` of the predictions ``pred_json`` (PNGs in ``pred_folder``)
    against ``gt_json`` (PNGs in ``gt_folder``), both COCO panoptic JSON contents.
    """
    for folder, what in ((gt_folder, "ground truth"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"folder {folder} with {what} segmentations does not exist")

    def add(stats: PanopticStats, pair: tuple[dict, dict]) -> None:
        gt_ann, pred_ann = pair
        stats.add_image(
            _open_png(os.path.join(gt_folder, gt_ann["file_name"])),
            gt_ann["segments_info"],
            _open_png(os.path.join(pred_folder, pred_ann["file_name"])),
            pred_ann["segments_info"],
            image_id=gt_ann["image_id"],
        )

    pairs = _annotation_pairs(gt_json, pred_json)
    return stats_in_threads(pairs, add, gt_json["categories"], threads)


def pq_compute(
    gt_json_file: str,
    pred_json_file: str,
    gt_folder: str | None = None,
    pred_folder: str | None = None,
    threads: int = 2,
) -> dict[str, Any]:
    """
    panopticapi's ``pq_compute``: ``{"All" | "Things" | "Stuff": {pq, sq, rq, n}, "per_class":
    {category id: {pq, sq, rq}}}``, from the files.
    """
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    gt_folder = gt_folder if gt_folder is not None else gt_json_file.replace(".json", "")
    pred_folder = pred_folder if pred_folder is not None else pred_json_file.replace(".json", "")
    stats = evaluate_panoptic_files(gt_json, pred_json, gt_folder, pred_folder, threads)
    return stats.pq_results()


def dataset_ground_truth(name: str, config_file: str | None) -> tuple[str, str]:
    """(panoptic JSON, PNG folder) of the registered dataset ``name``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..config import get_cfg
    from ..data.datasets.custom import register_from_config

    if config_file:
        cfg = get_cfg()
        cfg.merge_from_file(config_file)
        register_from_config(cfg)
    if name not in DatasetCatalog.list():
        raise SystemExit(
            f"error: dataset {name!r} is not registered (give the --config-file whose "
            "DATASETS.REGISTER names it)"
        )
    metadata = MetadataCatalog.get(name)
    if not hasattr(metadata, "panoptic_json"):
        raise SystemExit(f"error: dataset {name!r} has no panoptic ground truth (panoptic_json)")
    return metadata.panoptic_json, metadata.panoptic_root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ground_truth = parser.add_mutually_exclusive_group(required=True)
    ground_truth.add_argument("--gt_json_file", help="ground-truth COCO panoptic JSON")
    ground_truth.add_argument("--dataset", help="ground truth: this registered dataset's")
    parser.add_argument("--config-file", help="register its DATASETS.REGISTER (for --dataset)")
    parser.add_argument("--pred_json_file", required=True, help="predicted COCO panoptic JSON")
    parser.add_argument(
        "--gt_folder", help="ground-truth PNGs (default: the JSON path without .json)"
    )
    parser.add_argument(
        "--pred_folder", help="predicted PNGs (default: the JSON path without .json)"
    )
    parser.add_argument("--output_json", help="also write the results (pq_compute's dict) here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    gt_json_file, gt_folder = args.gt_json_file, args.gt_folder
    if args.dataset:
        gt_json_file, gt_folder = dataset_ground_truth(args.dataset, args.config_file)
    start = time.perf_counter()
    results = pq_compute(
        gt_json_file, args.pred_json_file, gt_folder, args.pred_folder, args.threads
    )
    print(format_pq_table(results))
    print(f"Time elapsed: {time.perf_counter() - start:0.2f} seconds")
    if args.output_json:
        atomic_write_json(args.output_json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
