#!/usr/bin/env python
"""
Time the two PQ command lines end to end, start-up included, on the synthetic COCO panoptic files
of ``tools/benchmark_pq.py``: ``python -m panopticapi.evaluation`` against ``python -m
panoptic_zoo.evaluation.pq_compute``, each run in a fresh process, the two alternating so that
both see the same load. Checks that both print the same PQ table, prints the median wall times
and writes JSON.

    python tools/benchmark_pq_command.py                # 200 images of 640x480, 5 runs each
    python tools/benchmark_pq_command.py --images 50 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark_pq import add_dataset_arguments, write_dataset

from panoptic_zoo.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
MODULES = {
    "panopticapi": "panopticapi.evaluation",
    "panoptic_zoo": "panoptic_zoo.evaluation.pq_compute",
}


def pq_table(stdout: str) -> list[str]:
    """The rows All, Things, Stuff of the table both commands print."""
    return [
        line
        for line in stdout.splitlines()
        if line.split("|")[0].strip() in ("All", "Things", "Stuff")
    ]


def timed_run(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return time.perf_counter() - start, run.stdout


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--runs", type=int, default=5, help="runs of each command")
    parser.add_argument("--output-json", default=str(REPO / "output" / "benchmark_pq_command.json"))
    args = parser.parse_args(argv)

    seconds = {name: [] for name in MODULES}
    load_averages = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="benchmark_pq_command_") as tmp:
        root = Path(tmp)
        write_dataset(root, args.images, args.height, args.width, args.things, args.seed)
        files = [
            "--gt_json_file",
            str(root / "gt.json"),
            "--pred_json_file",
            str(root / "pred.json"),
        ]
        tables = {}
        for _ in range(args.runs):
            for name, module in MODULES.items():
                elapsed, stdout = timed_run([sys.executable, "-m", module, *files])
                seconds[name].append(elapsed)
                tables[name] = pq_table(stdout)
            load_averages.append(os.getloadavg())
    if tables["panopticapi"] != tables["panoptic_zoo"] or len(tables["panopticapi"]) != 3:
        raise SystemExit(f"the commands printed different PQ tables: {tables}")

    medians = {name: statistics.median(times) for name, times in seconds.items()}
    report = {
        "settings": {**{k: v for k, v in vars(args).items() if k != "output_json"},
                     "cpu_count": os.cpu_count()},
        "seconds": seconds,
        "median_seconds": medians,
        "speed_up": medians["panopticapi"] / medians["panoptic_zoo"],
        "load_average_1min": [load[0] for load in load_averages],
        "pq_table": tables["panoptic_zoo"],
    }  # fmt: skip
    atomic_write_json(args.output_json, report)
    print_summary(report)
    print(f"written: {args.output_json}")
    return report


def print_summary(report: dict) -> None:
    settings, seconds, medians = report["settings"], report["seconds"], report["median_seconds"]
    loads = " ".join(f"{load:.2f}" for load in report["load_average_1min"])
    print(f"{settings['images']} images of {settings['width']}x{settings['height']}, "
          f"{settings['runs']} runs of each command (alternating), {settings['cpu_count']} cores, "
          f"1-minute load average {loads}")  # fmt: skip
    for name, module in MODULES.items():
        runs = " ".join(f"{t:.2f}" for t in seconds[name])
        print(f"python -m {module:36s} median {medians[name]:.2f} s  (runs: {runs})")
    print(f"speed-up: {report['speed_up']:.1f}x")


if __name__ == "__main__":
    main()
