#!/usr/bin/env python
"""
Each C kernel against every library path available for the same work, in its place
(issue 25's rule, docs/ACCELERATION.md: a C kernel stays only where it is >= 1.3x faster than
the best library path):

* the deformable convolutions of the configs' models (``_deform_sampling.c``:
  ``panoptic_zoo::sampled_deform_conv3x3``) and their depthwise ones (no C kernel any more:
  which library path is fastest; one place per config and kind, dilated or not);
* the post-processing's class-map argmax and log-sum-exps (``_class_maps.c``) on ``--classes``
  x ``--size`` logits (133 COCO classes; the first 80 the thing group).

Each config's model (its initialization, the plain layers) runs its network once on a random
image of ``--size``; every layer keeps the input it got; deformable layers get offsets of 2 px
(standard deviation) on it, as trained ones give (initialized: 0). A place's paths each run all
its layers, each on its own input, in turns (one call of each per round, after an untimed
round that also compiles), ``--threads`` threads, medians of ``--repeats`` rounds. Paths:
PyTorch eager (oneDNN, NCHW and channels-last input; torchvision), ``torch.compile`` of the eager
expression (where it compiles), ONNX Runtime one-node sessions (as the CPU optimization runs
them), and the C kernel where there is one. Prints a Markdown table and writes the JSON report:

    OMP_NUM_THREADS=2 python tools/kernel_speed.py --output kernel_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from detectron2.layers import Conv2d
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from panoptic_zoo.acceleration.class_maps import CClassMapKernels
from panoptic_zoo.acceleration.depthwise_conv import is_same_padded_depthwise
from panoptic_zoo.acceleration.deform_conv import sampled_deform_conv3x3
from panoptic_zoo.acceleration.kernels import CLASS_MAPS, DEFORM_SAMPLING
from panoptic_zoo.acceleration.onnxruntime_layers import OnnxRuntimeNode
from panoptic_zoo.config import get_cfg
from panoptic_zoo.deploy import DeployNetwork
from panoptic_zoo.deploy.export import network_input
from panoptic_zoo.engine import build_inference_model, without_acceleration
from panoptic_zoo.layers import DeformableConv3x3
from panoptic_zoo.postprocess.maps import class_logsumexps

CONFIGS = (
    "configs/coco/upsnet_R_50_1x.yaml",
    "configs/coco/panoptic_fcn_R_50_1x.yaml",
    "configs/coco/panoptic_deeplab_R_52_DC5_dsconv_200k.yaml",
)
C_KERNEL = "C kernel"
KEEP_RATIO = 1.3  # the rule: best library path / C kernel

Paths = dict[str, Callable[[], object]]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--size", nargs=2, type=int, default=(800, 1333))
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--thing-classes", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--output", default="kernel_speed.json", help="the JSON report")
    return parser.parse_args(argv)


@torch.no_grad()
def layers_and_inputs(config: str, size: tuple[int, int]) -> tuple[list, list]:
    """``config``'s plain depthwise and deformable layers and the input each got on one random
    image, in the order they ran."""
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_inference_model(without_acceleration(cfg), "")
    depthwise, deformable = [], []

    def record(found):
        return lambda module, args: found.append((module, args[0].contiguous()))

    handles = [
        module.register_forward_pre_hook(record(deformable))
        for module in model.modules()
        if isinstance(module, DeformableConv3x3)
    ] + [
        module.register_forward_pre_hook(record(depthwise))
        for module in model.modules()
        if is_same_padded_depthwise(module)
    ]
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0))
    DeployNetwork(model).eval()(network_input(model, [{"image": image}]))
    for handle in handles:
        handle.remove()
    for layer, x in deformable:
        # Initialized offsets are 0; random ones of 2 px (standard deviation) on this input.
        layer.offset.weight.normal_(0, 1)
        layer.offset.weight.mul_(2 / layer.offset(x)[:, : 2 * 9].std())
    return depthwise, deformable


def _compiled(eager: Callable[[], object]) -> Callable[[], object] | str:
    """``torch.compile(eager)`` after one call, or why it does not compile."""
    try:
        compiled = torch.compile(eager, fullgraph=True)
        compiled()
    except Exception as e:  # noqa: BLE001  (any compiler failure: the path is not available)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return compiled


def _with_compiled(paths: Paths, eager_name: str) -> tuple[Paths, dict[str, str]]:
    compiled = _compiled(paths[eager_name])
    if isinstance(compiled, str):
        return paths, {f"torch.compile({eager_name})": compiled}
    return {**paths, f"torch.compile({eager_name})": compiled}, {}


def depthwise_paths(layers: list[tuple[Conv2d, torch.Tensor]]) -> Paths:
    """The depthwise convolutions of ``layers`` (without their norms and activations), each on
    its input, by every path."""
    arguments = [(x, conv.weight, conv.bias, conv.padding, conv.dilation, conv.groups)
                 for conv, x in layers]  # fmt: skip
    channels_last = [(x.contiguous(memory_format=torch.channels_last), w.contiguous(
        memory_format=torch.channels_last), *rest) for x, w, *rest in arguments]  # fmt: skip
    nodes = [
        OnnxRuntimeNode(
            "Conv", ["X", "W", "B" if b is not None else ""], ["W", "B"],
            {"group": g, "kernel_shape": list(w.shape[-2:]), "dilations": list(d),
             "pads": list(p) * 2},
        )
        for x, w, b, p, d, g in arguments
    ]  # fmt: skip
    return {
        "oneDNN NCHW": lambda: [F.conv2d(x, w, b, 1, p, d, g) for x, w, b, p, d, g in arguments],
        "oneDNN channels-last input": lambda: [
            F.conv2d(x, w, b, 1, p, d, g) for x, w, b, p, d, g in channels_last
        ],
        "ONNX Runtime Conv": lambda: [
            node(X=x, W=w, B=b) for node, (x, w, b, *_) in zip(nodes, arguments)
        ],
    }


def deformable_paths(layers: list[tuple[DeformableConv3x3, torch.Tensor]]) -> Paths:
    """The deformable convolutions of ``layers`` on their inputs' offsets (computed once: the
    same for every path), by every path."""
    arguments = []
    for layer, x in layers:
        offset, mask = layer.offsets_and_mask(x)
        arguments.append((x, layer.weight, offset.contiguous(), mask, layer.bias))
    nodes = [
        OnnxRuntimeNode(
            "DeformConv", ["X", "W", "offset", "B" if b is not None else "",
                           "mask" if m is not None else ""],
            ["W", "B"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
        )
        for x, w, o, m, b in arguments
    ]  # fmt: skip
    paths = {
        "torchvision": lambda: [
            deform_conv2d(x, o, w, b, padding=(1, 1), mask=m) for x, w, o, m, b in arguments
        ],
        "ONNX Runtime DeformConv": lambda: [
            node(X=x, W=w, offset=o, B=b, mask=m) for node, (x, w, o, m, b) in zip(nodes, arguments)
        ],
    }
    if DEFORM_SAMPLING is not None:
        paths[C_KERNEL] = lambda: [
            sampled_deform_conv3x3(x, o, w, b, m) for x, w, o, m, b in arguments
        ]
    return paths


def class_map_places(classes: int, things: int, size: tuple[int, int]) -> dict[str, Paths]:
    """The argmax and the log-sum-exps (all classes; the thing group) over random logits."""
    logits = torch.randn(classes, *size, generator=torch.Generator().manual_seed(0)) * 4
    group = slice(0, things)
    argmax_node = OnnxRuntimeNode("ArgMax", ["data"], [], {"axis": 0, "keepdims": 0},
                                  output_rank=2, output_dtype="int64")  # fmt: skip
    # ReduceLogSumExp's axes are an input from opset 18: a constant.
    axes = torch.zeros(1, dtype=torch.long)
    logsumexp_node = OnnxRuntimeNode(
        "ReduceLogSumExp", ["data", "axes"], ["axes"], {"keepdims": 0}, output_rank=2
    )
    argmax = {
        "PyTorch argmax": lambda: logits.argmax(dim=0),
        "ONNX Runtime ArgMax": lambda: argmax_node(data=logits),
    }
    logsumexps = {
        "PyTorch logsumexp": lambda: (
            torch.logsumexp(logits, 0), torch.logsumexp(logits[group], 0)
        ),
        "PyTorch in row chunks (post-processing's)": lambda: class_logsumexps(logits, group),
        "ONNX Runtime ReduceLogSumExp": lambda: (
            logsumexp_node(data=logits, axes=axes), logsumexp_node(data=logits[group], axes=axes)
        ),
    }
    if CLASS_MAPS is not None:
        argmax[C_KERNEL] = lambda: CClassMapKernels.argmax(logits)
        logsumexps[C_KERNEL] = lambda: CClassMapKernels.logsumexps(logits, group)
    return {"class-map argmax": argmax, "class-map log-sum-exps": logsumexps}


def _tensors(result) -> list[torch.Tensor]:
    """The tensors of a path's result (a tensor, or lists and tuples of them), in order."""
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in _tensors(item)]


def measure(name: str, paths: Paths, not_compiled: dict[str, str], repeats: int) -> dict:
    """Median ms per path (calls in turns) and each path's largest difference from the first."""
    times = {path: [] for path in paths}
    for round in range(repeats + 1):
        for path, call in paths.items():
            start = time.perf_counter()
            call()
            if round:  # round 0: untimed
                times[path].append(time.perf_counter() - start)
    reference = _tensors(next(iter(paths.values()))())
    differences = {
        path: max(
            (got.double() - expected.double()).abs().max().item()
            for got, expected in zip(_tensors(call()), reference)
        )
        for path, call in paths.items()
    }
    ms = {path: 1000 * statistics.median(samples) for path, samples in times.items()}
    # Differences are absolute: untrained layers' outputs can be large (or all zero).
    largest = max(x.double().abs().max().item() for x in reference)
    return {"place": name, "ms": ms, "max_abs_difference": differences,
            "max_abs_output": largest, "not_available": not_compiled,
            **verdict(ms)}  # fmt: skip


def verdict(ms: dict[str, float]) -> dict:
    """The fastest library path, its time over the C kernel's and what the rule keeps."""
    library = {path: t for path, t in ms.items() if path != C_KERNEL}
    best = min(library, key=library.get)
    if C_KERNEL not in ms:
        return {"best_library": best, "verdict": best}
    ratio = library[best] / ms[C_KERNEL]
    return {"best_library": best, "best_library_over_c": ratio,
            "verdict": "keep the C kernel" if ratio >= KEEP_RATIO else best}  # fmt: skip


def markdown(places: list[dict]) -> str:
    rows = [
        "| place | layer calls | C kernel ms | library paths, ms | best library / C | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for place in places:
        library = ", ".join(
            f"{path} {t:.1f}" for path, t in place["ms"].items() if path != C_KERNEL
        )
        c_ms = place["ms"].get(C_KERNEL)
        ratio = place.get("best_library_over_c")
        rows.append(
            f"| {place['place']} | {place['layer_calls']} | "
            f"{'-' if c_ms is None else f'{c_ms:.1f}'} | {library} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {place['verdict']} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    report = {"size": list(size), "threads": args.threads, "repeats": args.repeats,
              "keep_ratio": KEEP_RATIO, "load_average_at_start": os.getloadavg(),
              "places": []}  # fmt: skip
    places: list[tuple[str, int, Paths]] = []
    with torch.no_grad():
        for config in args.configs:
            depthwise, deformable = layers_and_inputs(config, size)
            stem = Path(config).stem
            for dilated in (True, False):
                chosen = [(m, x) for m, x in depthwise if (m.dilation[0] > 1) == dilated]
                if chosen:
                    kind = "dilated" if dilated else "undilated"
                    sizes = sorted({f"{m.kernel_size[0]}x{m.kernel_size[1]}" for m, _ in chosen})
                    name = f"{stem}: {kind} depthwise {'/'.join(sizes)}"
                    places.append((name, len(chosen), depthwise_paths(chosen)))
            if deformable:
                places.append((f"{stem}: deformable 3x3", len(deformable),
                               deformable_paths(deformable)))  # fmt: skip
        for name, paths in class_map_places(args.classes, args.thing_classes, size).items():
            places.append((f"{name}, {args.classes} x {size[0]} x {size[1]}", 1, paths))
        for name, layers, paths in places:
            eager = next(iter(paths))
            paths, not_compiled = _with_compiled(paths, eager)
            place = measure(name, paths, not_compiled, args.repeats)
            place["layer_calls"] = layers
            report["places"].append(place)
            print(f"{name}: {place['verdict']}", file=sys.stderr, flush=True)
    report["load_average_at_end"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(f"load average at start {report['load_average_at_start']}, at end "
          f"{report['load_average_at_end']}; {args.threads} threads\n")  # fmt: skip
    print(markdown(report["places"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
