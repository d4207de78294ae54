#!/usr/bin/env python
"""
Train, evaluate and publish one model zoo config:

1. train ``configs/<config>`` with the project's Trainer (which evaluates at the end) into
   ``--output-dir`` -- or take a finished run from ``--from-output DIR`` (its model_final.pth,
   eval_results.json, or an evaluation run now if that is missing). The run must be of this
   config: its config.yaml must agree on the method, datasets, class counts and schedule, and
   its checkpoint must be of the last iteration. Nothing in DIR is overwritten: this tool's own
   files (its config dump, a new evaluation) go to ``DIR/model_zoo_publish``;
2. install the weights (model only, loadable with ``torch.load(weights_only=True)``) as
   ``<model zoo dir>/<config without .yaml>/model_final.pth`` and compute their sha256;
3. add or replace the config's row in docs/model_zoo.json and re-render docs/MODEL_ZOO.md.

    python tools/train_model_zoo.py --config shapes/panoptic_fpn_R_18.yaml
    python tools/train_model_zoo.py --config shapes/upsnet_R_18.yaml --from-output output/shapes/upsnet

Trailing KEY VALUE pairs override the config (e.g. MODEL.DEVICE cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

from panoptic_zoo.checkpoint import build_checkpointer
from panoptic_zoo.config import CLASS_COUNT_KEYS, get_cfg
from panoptic_zoo.engine import Trainer, setup_cfg
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE
from panoptic_zoo.model_zoo import checkpoint_path, get_config_file, model_zoo_root
from panoptic_zoo.model_zoo.table import (
    entry_from_run,
    read_entries,
    upsert,
    write_entries,
)
from panoptic_zoo.utils.checksum import sha256_of
from panoptic_zoo.utils.io import atomic_write

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="relative to configs/, e.g. shapes/x.yaml")
    parser.add_argument(
        "--from-output", help="a finished run's OUTPUT_DIR: publish it, no training"
    )
    parser.add_argument("--output-dir", help="where to train (default: output/model_zoo/<config>)")
    parser.add_argument("--measured", help="the table's 'measured' cell (default: the machine)")
    parser.add_argument(
        "--docs-dir", default=str(DOCS), help="where model_zoo.json/MODEL_ZOO.md are"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s"


def logged_training_time(output_dir: Path) -> str:
    """detectron2's "Total training time: H:MM:SS" from the run's log.txt, if it is there."""
    log = output_dir / "log.txt"
    found = (
        re.findall(r"Total training time: (\d+):(\d\d):(\d\d)", log.read_text())
        if log.is_file()
        else []
    )
    if not found:
        return "not logged"
    hours, minutes, seconds = map(int, found[-1])
    return format_duration(hours * 3600 + minutes * 60 + seconds)


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()} CPU cores"


def trained_run(cfg) -> tuple[dict, str]:
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()  # ends with the evaluation, written to EVAL_RESULTS_FILE
    elapsed = format_duration(time.perf_counter() - start)
    return json.loads((Path(cfg.OUTPUT_DIR) / EVAL_RESULTS_FILE).read_text()), elapsed


# What a finished run must share with the config it is published as.
RUN_KEYS = (
    "MODEL.META_ARCHITECTURE",
    "DATASETS.TRAIN",
    "DATASETS.TEST",
    "DATASETS.NUM_THING_CLASSES",
    "DATASETS.NUM_STUFF_CLASSES",
    *CLASS_COUNT_KEYS,
    "SOLVER.MAX_ITER",
    "SOLVER.IMS_PER_BATCH",
    "SOLVER.BASE_LR",
    "SOLVER.STEPS",
)


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if isinstance(node, (list, tuple)) else node


def check_run_matches(cfg, output_dir: Path) -> None:
    """Raise ValueError listing every way the run in ``output_dir`` differs from ``cfg``."""
    run_config = output_dir / "config.yaml"
    if not run_config.is_file():
        raise ValueError(
            f"{run_config} does not exist: --from-output needs the config the run was trained "
            "with (train_net.py writes it), to check that the run is of this config"
        )
    run = get_cfg()
    run.merge_from_file(str(run_config))
    differences = [
        f"{key}: run {_value(run, key)!r}, config {_value(cfg, key)!r}"
        for key in RUN_KEYS
        if _value(run, key) != _value(cfg, key)
    ]
    checkpoint = torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=True)
    iteration = checkpoint.get("iteration")
    if iteration is not None and iteration + 1 != cfg.SOLVER.MAX_ITER:
        differences.append(
            f"model_final.pth is of iteration {iteration + 1}, SOLVER.MAX_ITER is "
            f"{cfg.SOLVER.MAX_ITER}"
        )
    if differences:
        raise ValueError(
            f"the run in {output_dir} is not of this config:\n"
            + "\n".join(f"  - {d}" for d in differences)
        )


def finished_run(cfg, output_dir: Path) -> tuple[dict, str]:
    results_file = output_dir / EVAL_RESULTS_FILE
    if results_file.is_file():
        results = json.loads(results_file.read_text())
    else:
        model = Trainer.build_model(cfg)
        build_checkpointer(cfg, model, exact_fit=True).load(str(output_dir / "model_final.pth"))
        results = Trainer.test(cfg, model)  # written under cfg.OUTPUT_DIR, not the run's
    return results, logged_training_time(output_dir)


def install_weights(trained: Path, target: Path, config: str) -> str:
    """Copy the model's weights (no optimizer state) to ``target``; returns their sha256."""
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    published = {"model": checkpoint["model"], "__author__": f"panoptic_zoo model zoo: {config}"}
    atomic_write(target, lambda f: torch.save(published, f))
    return sha256_of(target)


def main(argv=None) -> int:
    args = parse_args(argv)
    config_file = get_config_file(args.config)
    name = str(Path(args.config).with_suffix(""))
    output_dir = Path(args.from_output or args.output_dir or REPO / "output" / "model_zoo" / name)
    # A finished run's directory is the user's: this tool writes only into its own subfolder.
    own_dir = output_dir / "model_zoo_publish" if args.from_output else output_dir
    setup_args = argparse.Namespace(
        config_file=config_file, opts=[*args.opts, "OUTPUT_DIR", str(own_dir)], eval_only=False
    )
    cfg = setup_cfg(setup_args)
    if args.from_output:
        try:
            check_run_matches(cfg, output_dir)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results, train_time = finished_run(cfg, output_dir)
    else:
        results, train_time = trained_run(cfg)

    target = checkpoint_path(args.config)
    sha256 = install_weights(output_dir / "model_final.pth", target, args.config)
    measured = args.measured or machine()
    entry = entry_from_run(
        args.config, cfg, results, train_time=train_time,
        checkpoint=str(target.relative_to(model_zoo_root())), sha256=sha256, measured=measured,
    )  # fmt: skip
    docs = Path(args.docs_dir)
    write_entries(
        docs / "model_zoo.json",
        docs / "MODEL_ZOO.md",
        upsert(read_entries(docs / "model_zoo.json"), entry),
    )
    print(f"installed {target} (sha256 {sha256})")
    print(entry.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
