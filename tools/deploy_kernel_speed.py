#!/usr/bin/env python
"""
The project's C kernels against ONNX Runtime's kernels for the same layers (docs/DEPLOYMENT.md):
the deformable 3x3 convolutions (``panoptic_zoo::sampled_deform_conv3x3`` against ONNX
``DeformConv``; UPSNet, Panoptic FCN) and the depthwise convolutions
(``panoptic_zoo::depthwise_conv2d`` against a grouped ONNX ``Conv``; Panoptic-DeepLab).

Each config's model (its initialization) runs its network once on one random image of
``--size``; every layer of each kernel keeps the input it got. Then each deformable layer gets
offsets of 2 px (standard deviation) on that input, as trained ones give (initialized: 0). The layers of one kernel, each on its own input, are exported together as
one ONNX graph, and the eager layers (the C kernels) and ONNX Runtime's run on those inputs in
turns (one call of each per round), ``--threads`` threads each:

    OMP_NUM_THREADS=2 python tools/deploy_kernel_speed.py --configs \\
        configs/coco/upsnet_R_50_1x.yaml configs/coco/panoptic_fcn_R_50_1x.yaml \\
        configs/coco/panoptic_deeplab_R_52_DC5_dsconv_200k.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from panoptic_zoo.acceleration.deform_conv import SampledDeformableConv3x3
from panoptic_zoo.acceleration.depthwise_conv import KernelDepthwiseConv2d
from panoptic_zoo.config import get_cfg
from panoptic_zoo.deploy import DeployNetwork
from panoptic_zoo.deploy.export import ONNX_OPSET, network_input
from panoptic_zoo.engine import build_inference_model

# Per kernel: the layers that run it, and what ONNX Runtime runs instead.
KERNELS = {
    "sampled_deform_conv3x3": (SampledDeformableConv3x3, "DeformConv (and its offset Conv)"),
    "depthwise_conv2d": (KernelDepthwiseConv2d, "grouped Conv"),
}


class LayersOnTheirInputs(nn.Module):
    """Each layer on its own input; the outputs as a tuple."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(x) for layer, x in zip(self.layers, inputs))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--size", nargs=2, type=int, default=(800, 1333))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    return parser.parse_args(argv)


@torch.no_grad()
def layers_and_inputs(config: str, size: tuple[int, int]) -> dict[str, tuple[list, list]]:
    """Per kernel: ``config``'s layers that run it and the input each got on one random image."""
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_inference_model(cfg, "")
    seen = {kernel: ([], []) for kernel in KERNELS}

    def record(kernel):
        def hook(module, args):
            seen[kernel][0].append(module)
            seen[kernel][1].append(args[0].contiguous())

        return hook

    handles = [
        module.register_forward_pre_hook(record(kernel))
        for kernel, (layer_type, _) in KERNELS.items()
        for module in model.modules()
        if isinstance(module, layer_type)
    ]
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0))
    DeployNetwork(model).eval()(network_input(model, [{"image": image}]))
    for handle in handles:
        handle.remove()
    for layer, x in zip(*seen["sampled_deform_conv3x3"]):
        # Initialized offsets are 0; random ones of 2 px (standard deviation) on this input.
        layer.offset.weight.normal_(0, 1)
        layer.offset.weight.mul_(2 / layer.offset(x)[:, : 2 * 9].std())
    return {kernel: found for kernel, found in seen.items() if found[0]}


def time_in_turns(eager, session, inputs: list[torch.Tensor], repeats: int) -> tuple[list, list]:
    """Seconds of ``eager(*inputs)`` and of ``session`` on the same inputs, one call of each per
    round, after one untimed round."""
    feed = {f"input{i}": x.numpy() for i, x in enumerate(inputs)}
    times = ([], [])
    for _ in range(repeats + 1):
        for samples, run in zip(times, (lambda: eager(*inputs), lambda: session.run(None, feed))):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
    return times[0][1:], times[1][1:]


def main(argv=None) -> int:
    import onnxruntime

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    print(f"load average at start: {os.getloadavg()}")
    print(
        "| config | kernel | layers | ONNX Runtime runs | eager ms | ONNX Runtime ms | "
        "ONNX Runtime speed-up | max abs. difference |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        for kernel, (layers, inputs) in layers_and_inputs(config, tuple(args.size)).items():
            eager = LayersOnTheirInputs(layers).eval()
            with torch.no_grad(), tempfile.TemporaryDirectory() as folder:
                path = str(Path(folder) / "layers.onnx")
                torch.onnx.export(
                    eager, tuple(inputs), path, dynamo=False, opset_version=ONNX_OPSET,
                    input_names=[f"input{i}" for i in range(len(inputs))],
                )  # fmt: skip
                session = onnxruntime.InferenceSession(
                    path, options, providers=["CPUExecutionProvider"]
                )
                eager_s, onnx_s = time_in_turns(eager, session, inputs, args.repeats)
                difference = max(
                    (torch.from_numpy(got) - expected).abs().max().item()
                    for got, expected in zip(
                        session.run(None, {f"input{i}": x.numpy() for i, x in enumerate(inputs)}),
                        eager(*inputs),
                    )
                )
            eager_ms, onnx_ms = 1000 * statistics.median(eager_s), 1000 * statistics.median(onnx_s)
            print(
                f"| {Path(config).stem} | `{kernel}` | {len(layers)} | {KERNELS[kernel][1]} | "
                f"{eager_ms:.0f} | {onnx_ms:.0f} | {eager_ms / onnx_ms:.2f}x | {difference:.1e} |",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
