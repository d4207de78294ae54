#!/usr/bin/env python
"""
How Panoptic FCN's training targets fall on a dataset under a config: per kernel-generator level,
the things assigned to it, their boxes in level cells and their Gaussian radii (CornerNet radius at
``MODEL.PANOPTIC_FCN.TARGETS.GAUSSIAN_MIN_OVERLAP``; radius 0 = a single positive cell, sigma 1/3).
Each image goes once through the config's training mapper (its augmentation, seeded) and the
model's own target generator; no network runs.

    python tools/panoptic_fcn_target_stats.py --config-file configs/shapes/panoptic_fcn_R_18.yaml
    python tools/panoptic_fcn_target_stats.py --config-file configs/shapes/panoptic_fcn_R_18.yaml \\
        MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.INSTANCE_SCALES "[[1, 64], [32, 128], [64, 256], [128, 512], [256, 2048]]"
"""

from __future__ import annotations

import argparse

import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import ImageList
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import build_dataset_mapper


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", help="default: the config's first training dataset")
    parser.add_argument("--max-images", type=int, default=0, help="0: every image")
    parser.add_argument("--seed", type=int, default=0, help="seeds the mapper's augmentation")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def level_statistics(cfg, dataset: str, max_images: int = 0, seed: int = 0) -> list[dict]:
    """Per level: number of assignments, radius counts and the median box side in level cells."""
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE != "PanopticFCN":
        raise ValueError(f"{cfg.MODEL.META_ARCHITECTURE} is not Panoptic FCN")
    mapper = build_dataset_mapper(cfg, is_train=True)
    records = DatasetCatalog.get(dataset)
    if max_images:
        records = records[:max_images]
    divisibility = model.backbone.size_divisibility
    levels = cfg.MODEL.PANOPTIC_FCN.KERNEL_GENERATOR.IN_FEATURES
    encoder_level = cfg.MODEL.PANOPTIC_FCN.FEATURE_ENCODER.IN_FEATURES[0]
    shapes_by_padded_size: dict[tuple[int, int], dict] = {}
    radii: list[list[torch.Tensor]] = [[] for _ in levels]
    sides: list[list[torch.Tensor]] = [[] for _ in levels]
    # The mapper's augmentation draws from numpy's and Python's generators too.
    seed_all_rng(seed)
    model.eval()
    for record in tqdm(records, desc="targets", unit="image"):
        item = mapper(record)
        if item is None:
            continue
        # The padded size the model's own batching gives this image.
        padded = tuple(ImageList.from_tensors([item["image"]], divisibility).tensor.shape[-2:])
        if padded not in shapes_by_padded_size:
            with torch.no_grad():
                features = model.backbone(torch.zeros((1, 3, *padded)))
            shapes_by_padded_size[padded] = {k: tuple(v.shape[-2:]) for k, v in features.items()}
        shapes = shapes_by_padded_size[padded]
        instances = item["instances"]
        boxes = instances.gt_boxes.tensor
        targets = model.target_generator(
            instances.gt_masks.tensor, boxes, instances.gt_classes, item["sem_seg"], padded,
            [shapes[k] for k in levels], shapes[encoder_level],
        )  # fmt: skip
        for index, (assignment, level) in enumerate(zip(targets.assignments, levels)):
            h, w = shapes[level]
            chosen = boxes[assignment.instance]
            side = ((chosen[:, 2] - chosen[:, 0]) * (w / padded[1])
                    * (chosen[:, 3] - chosen[:, 1]) * (h / padded[0])).sqrt()  # fmt: skip
            radii[index].append(assignment.radius)
            sides[index].append(side)
    rows = []
    for level, level_radii, level_sides in zip(levels, radii, sides):
        radius = torch.cat(level_radii) if level_radii else torch.zeros(0, dtype=torch.long)
        side = torch.cat(level_sides) if level_sides else torch.zeros(0)
        rows.append(
            {
                "level": level,
                "assignments": len(radius),
                "radius_0": int((radius == 0).sum()),
                "radius_1": int((radius == 1).sum()),
                "radius_2_plus": int((radius >= 2).sum()),
                "median_box_cells": float(side.median()) if len(side) else float("nan"),
            }
        )
    return rows


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="panoptic_zoo")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    dataset = args.dataset or cfg.DATASETS.TRAIN[0]
    rows = level_statistics(cfg, dataset, args.max_images, args.seed)
    total = sum(r["assignments"] for r in rows)
    print(f"\n{dataset}: {total} thing-level assignments "
          f"(GAUSSIAN_MIN_OVERLAP {cfg.MODEL.PANOPTIC_FCN.TARGETS.GAUSSIAN_MIN_OVERLAP})")  # fmt: skip
    print("| level | assignments | radius 0 | radius 1 | radius >= 2 | median sqrt(box area), cells |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['assignments']} | {r['radius_0']} | {r['radius_1']} | "
              f"{r['radius_2_plus']} | {r['median_box_cells']:.2f} |")  # fmt: skip
    radius_0 = sum(r["radius_0"] for r in rows)
    print(f"radius 0: {radius_0} of {total} ({100 * radius_0 / max(total, 1):.1f} %)")


if __name__ == "__main__":
    main()
