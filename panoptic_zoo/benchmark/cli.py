"""Command line of ``python -m panoptic_zoo.benchmark`` (see the package docstring)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..data.panoptic_format import add_dataset_argument
from ..model_zoo import get_config_file
from ..modeling.methods import registered_methods
from .run import run_benchmark
from .settings import BENCHMARK_BACKENDS, PRECISIONS, BenchmarkSettings, load_config

__all__ = ["main", "parse_args", "registered_method_configs"]

# Defaults of the full run (the setting) and of --tiny (CI smoke size).
FULL_DEFAULTS = {"size": (800, 1333), "warmup": 2, "repeats": 10}
TINY_DEFAULTS = {"size": (64, 96), "warmup": 1, "repeats": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m panoptic_zoo.benchmark",
        description="Parameters, FLOPs, network and post-processing time, peak memory, the "
        "machine's compute floor, the reference implementation's time and (with "
        "--eval-dataset) PQ/AP/mIoU of every config, in one run; writes benchmark.json, "
        "benchmark.md and speed_vs_pq.png.",
    )
    parser.add_argument(
        "--configs", nargs="+", metavar="YAML",
        help="configs to benchmark (default: every registered method's COCO config; --tiny: "
        "its shapes config)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", nargs="+", metavar="PTH",
        help="one checkpoint per config ('' = the config's own MODEL.WEIGHTS/initialization)",
    )  # fmt: skip
    parser.add_argument(
        "--size", nargs=2, type=int, metavar=("HEIGHT", "WIDTH"),
        help="input size, batch 1 (default 800 1333; --tiny: 64 96)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32"], choices=sorted(PRECISIONS),
        help="fp32 and/or amp (float16 autocast, CUDA only); default fp32",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, help="untimed calls first (default 2; --tiny: 1)")
    parser.add_argument("--repeats", type=int, help="timed calls, median (default 10; --tiny: 2)")
    parser.add_argument(
        "--eval-dataset", help="registered dataset to evaluate on (PQ, AP, mIoU); its first "
        "image is also the benchmark image unless --image is given",
    )  # fmt: skip
    add_dataset_argument(parser)
    parser.add_argument("--image", help="benchmark image file (default: random pixels)")
    parser.add_argument("--output-dir", type=Path, default=Path("output/benchmark"))
    parser.add_argument(
        "--tiny", action="store_true",
        help="CI smoke mode: configs shrunk to test size, 64x96 input, 1 warm-up + 2 repeats",
    )  # fmt: skip
    parser.add_argument(
        "--backend", nargs="+", default=["eager"], choices=["eager", *BENCHMARK_BACKENDS],
        help="eager and/or deployment backends (panoptic_zoo.deploy: the network exported at "
        "the benchmark size, post-processing eager), each timed on the same weights and input "
        "(default eager; eager is always timed); onnxruntime runs deformable convolutions on "
        "the C kernel where it is built, onnxruntime-deformconv on ONNX Runtime's DeformConv",
    )  # fmt: skip
    parser.add_argument(
        "--skip-reference", action="store_true",
        help="do not time the reference implementations",
    )  # fmt: skip
    parser.add_argument(
        "--panoptic-fcn-official-src", metavar="DIR",
        help="local copy of the official PanopticFCN repository: Panoptic FCN's reference "
        "(the same weights through the converter, outputs compared)",
    )  # fmt: skip
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[],
        help="KEY VALUE pairs applied to every config (last on the command line)",
    )  # fmt: skip
    return parser.parse_args(argv)


def registered_method_configs(tiny: bool) -> list[str]:
    """Every registered method's config: the shapes one for a tiny run, else the COCO one;
    relative to the working directory where it lies under it (as a report names given ones)."""
    configs = []
    for method in registered_methods():
        path = Path(get_config_file(method.shapes_config if tiny else method.coco_config))
        if path.is_relative_to(Path.cwd()):
            path = path.relative_to(Path.cwd())
        configs.append(str(path))
    return configs


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the report (also written to --output-dir)."""
    args = parse_args(argv)
    defaults = TINY_DEFAULTS if args.tiny else FULL_DEFAULTS
    settings = BenchmarkSettings(
        size=tuple(args.size or defaults["size"]),
        threads=args.threads,
        device=args.device,
        precisions=tuple(args.precisions),
        warmup=defaults["warmup"] if args.warmup is None else args.warmup,
        repeats=defaults["repeats"] if args.repeats is None else args.repeats,
        output_dir=args.output_dir,
        eval_dataset=args.eval_dataset,
        datasets=tuple(tuple(entry) for entry in args.dataset),
        image=args.image,
        tiny=args.tiny,
        skip_reference=args.skip_reference,
        opts=tuple(args.opts),
        panoptic_fcn_official_src=args.panoptic_fcn_official_src,
        backends=tuple(b for b in dict.fromkeys(args.backend) if b != "eager"),
    )
    configs = args.configs or registered_method_configs(args.tiny)
    # Every config's datasets registered (DATASETS.REGISTER, --dataset) and class counts checked
    # before anything is measured: the evaluated dataset's first image is the benchmark's.
    for config in configs:
        load_config(config, settings)
    command = shlex.join(["python", "-m", "panoptic_zoo.benchmark", *(argv or [])])
    report, paths = run_benchmark(configs, args.weights or [""] * len(configs), settings, command)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return report
