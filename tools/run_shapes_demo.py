#!/usr/bin/env python
"""
The main job on the embedded default: train Panoptic FPN (or the method of --config-file) on
the shapes dataset (CPU is fine), evaluate it before and after training, and write

  OUTPUT_DIR/demo_metrics.json       PQ/SQ/RQ (all, things, stuff), AP, mIoU: untrained and trained
  OUTPUT_DIR/events.out.tfevents.*   TensorBoard events (losses, learning rate, metrics)
  OUTPUT_DIR/model_final.pth         the checkpoint, in detectron2's format
  OUTPUT_DIR/visualizations/*.png    image | ground truth | prediction, for validation images

Usage: python tools/run_shapes_demo.py [--output-dir DIR] [--num-vis N] [KEY VALUE ...]
(trailing KEY VALUE pairs override the config, e.g. SOLVER.MAX_ITER 100).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from panoptic_zoo.data import build_dataset_mapper
from panoptic_zoo.engine import Trainer, setup_cfg
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE
from panoptic_zoo.utils.io import atomic_write_json
from panoptic_zoo.utils.visualization import save_panoptic_comparisons

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "shapes" / "panoptic_fpn_R_18.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument("--output-dir", default=str(REPO / "output" / "shapes_demo"))
    parser.add_argument("--num-vis", type=int, default=8, help="validation images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    args.opts = [*args.opts, "OUTPUT_DIR", args.output_dir]
    return args


def headline(results) -> str:
    pq = results["panoptic_seg"]
    return (
        f"PQ {pq['PQ']:.1f} (things {pq['PQ_th']:.1f}, stuff {pq['PQ_st']:.1f})  "
        f"SQ {pq['SQ']:.1f}  RQ {pq['RQ']:.1f}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = setup_cfg(args)
    dataset = cfg.DATASETS.TEST[0]

    trainer = Trainer(cfg)
    untrained = Trainer.test(cfg, trainer.model)
    trainer.train()  # ends with an evaluation, which the Trainer writes to EVAL_RESULTS_FILE
    output_dir = Path(cfg.OUTPUT_DIR)
    trained = json.loads((output_dir / EVAL_RESULTS_FILE).read_text())

    metrics_path = atomic_write_json(
        output_dir / "demo_metrics.json",
        {"dataset": dataset, "iterations": cfg.SOLVER.MAX_ITER, "untrained": untrained,
         "trained": trained},
    )  # fmt: skip
    pictures = save_panoptic_comparisons(
        trainer.model, dataset, build_dataset_mapper(cfg, is_train=False),
        output_dir / "visualizations", num_images=args.num_vis,
    )  # fmt: skip

    print(f"\n{cfg.MODEL.META_ARCHITECTURE} on {dataset}, {cfg.SOLVER.MAX_ITER} iterations:")
    print(f"  untrained: {headline(untrained)}")
    print(f"  trained:   {headline(trained)}")
    print(f"metrics:        {metrics_path}")
    print(f"checkpoint:     {output_dir / 'model_final.pth'}")
    print(f"tensorboard:    tensorboard --logdir {output_dir}")
    print(f"visualizations: {pictures[0].parent} ({len(pictures)} PNGs)" if pictures else "")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
