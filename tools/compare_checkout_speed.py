#!/usr/bin/env python
"""
Two checkouts of panoptic_zoo (e.g. before and after a change) timed against each other: each
config's benchmark (``python -m panoptic_zoo.benchmark``, the checkout's own code, C extensions
built in it) runs in a fresh process per checkout, the checkouts in turns (the first pass runs
the first checkout first, the next pass the second first, and so on), so that a machine's drift
in speed falls on both alike.
Reports, per config, the median network time of each checkout over the rounds, the ratio, and
network time / CPU floor (the benchmark's floor probe of the same process: the ratio least
moved by the machine's load):

    OMP_NUM_THREADS=2 python tools/compare_checkout_speed.py --checkouts BEFORE AFTER \\
        --configs configs/coco/panoptic_fpn_R_50_1x.yaml configs/coco/upsnet_R_50_1x.yaml \\
        --rounds=2 --output-dir output/benchmark/checkouts

Every extra argument after ``--`` goes to both benchmarks (default: ``--size 800 1333 --threads 2
--warmup 1 --repeats 3 --skip-reference``). Writes ``comparison.json`` and ``comparison.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

DEFAULT_BENCHMARK_ARGS = [
    "--size", "800", "1333", "--threads", "2", "--warmup", "1", "--repeats", "3", "--skip-reference",
]  # fmt: skip

# Runs one checkout's benchmark module, checking that the checkout's package is the one imported
# (an editable install of another checkout must not win).
_RUN_BENCHMARK = """
import runpy, sys
checkout = sys.argv[1]
sys.path.insert(0, checkout)
import panoptic_zoo
if not panoptic_zoo.__file__.startswith(checkout):
    sys.exit(f"imported {panoptic_zoo.__file__}, not the checkout {checkout}")
sys.argv = ["panoptic_zoo.benchmark", *sys.argv[2:]]
runpy.run_module("panoptic_zoo.benchmark", run_name="__main__", alter_sys=True)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkouts", nargs=2, type=Path, required=True, metavar=("FIRST", "SECOND"))
    parser.add_argument("--configs", nargs="+", required=True, help="config paths inside the checkouts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=Path("output/benchmark/checkouts"))
    parser.add_argument("benchmark_args", nargs="*", help="after --: arguments of both benchmarks")
    args = parser.parse_args(argv)
    for checkout in args.checkouts:
        for config in args.configs:
            if not (checkout / config).is_file():
                parser.error(f"{checkout / config} does not exist (--configs are paths inside each checkout)")
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        parser.error(f"--output-dir {args.output_dir} is not empty: choose a new one (nothing is overwritten)")
    return args


def run_benchmark(checkout: Path, config: str, output_dir: Path, benchmark_args: list[str]) -> dict:
    """One benchmark of ``config`` by ``checkout``'s code in a fresh process; its method row."""
    command = [
        sys.executable, "-c", _RUN_BENCHMARK, str(checkout.resolve()), "--configs", config,
        "--output-dir", str(output_dir.resolve()), *benchmark_args,
    ]  # fmt: skip
    subprocess.run(command, cwd=checkout, check=True)
    (row,) = json.loads((output_dir / "benchmark.json").read_text())["methods"]
    return row


def summarize(rows: dict[str, dict[str, list[dict]]], labels: list[str]) -> list[dict]:
    """Per config: each checkout's median network time and network / floor over the rounds."""
    summary = []
    for config, by_checkout in rows.items():
        entry = {"config": config}
        for label in labels:
            runs = by_checkout[label]
            entry[label] = {
                "network_s": [r["timings"]["fp32"]["network_s"] for r in runs],
                "network_over_floor": [r["timings"]["fp32"]["network_s"] / r["floor_s"] for r in runs],
            }
        first, second = (statistics.median(entry[label]["network_s"]) for label in labels)
        first_floor, second_floor = (statistics.median(entry[label]["network_over_floor"]) for label in labels)
        entry["second_over_first_network"] = second / first
        entry["second_over_first_network_over_floor"] = second_floor / first_floor
        summary.append(entry)
    return summary


def markdown(summary: list[dict], labels: list[str]) -> str:
    first, second = labels
    lines = [
        f"| config | {first}: network s | {second}: network s | {second} / {first} | "
        f"{first}: network / floor | {second}: network / floor | {second} / {first} (floor-normalized) |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        cells = [
            ", ".join(f"{v:.2f}" for v in entry[first]["network_s"]),
            ", ".join(f"{v:.2f}" for v in entry[second]["network_s"]),
            f"{entry['second_over_first_network']:.3f}",
            ", ".join(f"{v:.2f}" for v in entry[first]["network_over_floor"]),
            ", ".join(f"{v:.2f}" for v in entry[second]["network_over_floor"]),
            f"{entry['second_over_first_network_over_floor']:.3f}",
        ]
        lines.append(f"| {entry['config']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    benchmark_args = args.benchmark_args or DEFAULT_BENCHMARK_ARGS
    labels = [checkout.resolve().name for checkout in args.checkouts]
    if labels[0] == labels[1]:
        labels = ["first", "second"]
    rows = {config: {label: [] for label in labels} for config in args.configs}
    for round_index in range(args.rounds):
        order = list(zip(labels, args.checkouts))
        if round_index % 2:
            order.reverse()
        for config in args.configs:
            for label, checkout in order:
                print(f"round {round_index + 1}/{args.rounds}: {config} by {label}", flush=True)
                run_dir = args.output_dir / f"round{round_index + 1}" / label / Path(config).stem
                rows[config][label].append(run_benchmark(checkout, config, run_dir, benchmark_args))
    summary = summarize(rows, labels)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "comparison.json").write_text(json.dumps(
        {"checkouts": labels, "benchmark_args": benchmark_args, "rounds": args.rounds, "configs": summary},
        indent=1,
    ))  # fmt: skip
    table = markdown(summary, labels)
    (args.output_dir / "comparison.md").write_text(table)
    print(table)
    return summary


if __name__ == "__main__":
    main()
