#!/usr/bin/env python
"""
Peak memory of one CPU inference of each method on a large image (2048x4096 by default, a
Cityscapes frame at full resolution), with the shapes configs and random weights.

    python tools/measure_inference_memory.py [--height 2048] [--width 4096] [--output FILE.json]
                                             [--methods panoptic_fpn upsnet ...]
                                             [--reuse-freed-heap]

Each method runs in a fresh process, so that its peak resident set size (``ru_maxrss``) is its
own; the image goes into the model at full size (the test-time resize is set to keep it). Reported
per method: resident memory before inference (Python, torch, the model), the peak, and the time.
glibc's default heap unless --reuse-freed-heap: then the heap is set as the entry points set it
(panoptic_zoo.acceleration.allocator).
An untrained model detects many weak instances, so the panoptic merge handles up to
TEST.DETECTIONS_PER_IMAGE full-size masks: this is close to the worst case for the config.
Not a test: it takes minutes and several GB. Run it with OMP_NUM_THREADS=1 to measure one core.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHOD_CONFIGS = {
    "panoptic_fpn": "configs/shapes/panoptic_fpn_R_18.yaml",
    "upsnet": "configs/shapes/upsnet_R_18.yaml",
    "panoptic_deeplab": "configs/shapes/panoptic_deeplab_R_18.yaml",
    "panoptic_fcn": "configs/shapes/panoptic_fcn_R_18.yaml",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(config_file: str, height: int, width: int) -> dict:
    """One inference in this process; only called in the per-method child process."""
    import torch

    from panoptic_zoo.config import get_cfg
    from panoptic_zoo.engine import Trainer

    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / config_file))
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = min(height, width), max(height, width)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    before = peak_rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        output = model([{"image": image, "height": height, "width": width}])[0]
    return {
        "config": config_file,
        "image": f"{height}x{width}",
        "rss_before_inference_mb": round(before),
        "peak_rss_mb": round(peak_rss_mb()),
        "seconds": round(time.perf_counter() - start, 1),
        "segments": len(output["panoptic_seg"][1]),
        "instances": len(output["instances"]) if "instances" in output else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHOD_CONFIGS),
                        default=list(METHOD_CONFIGS))  # fmt: skip
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    parser.add_argument("--reuse-freed-heap", action="store_true",
                        help="keep freed memory for reuse, as the entry points do")  # fmt: skip
    parser.add_argument("--child", choices=sorted(METHOD_CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.reuse_freed_heap:
            from panoptic_zoo.acceleration.allocator import (
                restart_with_heap_tunables,
                reuse_freed_heap_memory,
            )

            restart_with_heap_tunables()
            reuse_freed_heap_memory()
        print(json.dumps(measure(METHOD_CONFIGS[args.child], args.height, args.width)))
        return 0
    results = {}
    for method in args.methods:
        command = [sys.executable, __file__, "--child", method,
                   "--height", str(args.height), "--width", str(args.width)]  # fmt: skip
        command += ["--reuse-freed-heap"] if args.reuse_freed_heap else []
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if run.returncode != 0:
            print(
                f"{method}: failed (exit {run.returncode})\n{run.stderr[-3000:]}", file=sys.stderr
            )
            return 1
        results[method] = json.loads(run.stdout.strip().splitlines()[-1])
        r = results[method]
        print(f"{method:17s} peak RSS {r['peak_rss_mb']:6d} MB  (before inference "
              f"{r['rss_before_inference_mb']} MB, {r['seconds']} s, {r['segments']} segments)",
              flush=True)  # fmt: skip
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
