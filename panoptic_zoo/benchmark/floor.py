"""
The machine's compute floor: sustained float32 rates of a large matrix product and of a 3x3
convolution, at the benchmark's thread count and device.

A method's network cannot run faster than its floating-point operations divided by the
convolution rate (its networks are convolutions), so ``network time / floor`` says how far an
implementation is from what the machine can do. The convolution is timed in both memory layouts
(NCHW and channels-last) and the faster one is the rate used, so a model switched to
channels-last cannot beat its floor.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["FULL_FLOOR", "TINY_FLOOR", "FloorProblem", "measure_floor"]


@dataclass(frozen=True)
class FloorProblem:
    """Sizes of the timed problems and how often each is timed (median after one warm-up)."""

    gemm_size: int  # n of an n x n x n matrix product
    conv_channels: int  # in and out channels of the 3x3 convolution (batch 1, padding 1)
    conv_size: tuple[int, int]  # its feature map
    repeats: int


# A 2048^3 product and a 256-channel 3x3 convolution on an 800x1333 image's stride-4 map: the
# shapes that dominate a ResNet-50-FPN at that size. Medians of 30 (~15 s per convolution
# layout): on the shared 2-core machine medians of 8 consecutive convolutions ranged over
# 145-172 GFLOP/s within 40 s; a median of 5 moves more from run to run.
FULL_FLOOR = FloorProblem(gemm_size=2048, conv_channels=256, conv_size=(200, 336), repeats=30)
TINY_FLOOR = FloorProblem(gemm_size=256, conv_channels=32, conv_size=(32, 48), repeats=2)


def _median_seconds(run: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    def timed() -> float:
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()  # warm-up: kernel selection, oneDNN primitive creation, allocator
    return statistics.median(timed() for _ in range(repeats))


def measure_floor(device: torch.device, problem: FloorProblem) -> dict:
    """GFLOP/s (2 floating-point operations per multiply-add) of each problem, float32."""
    generator = torch.Generator().manual_seed(0)

    def random(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    n = problem.gemm_size
    a, b = random(n, n), random(n, n)
    gemm_gflop = 2 * n**3 / 1e9
    c, (h, w) = problem.conv_channels, problem.conv_size
    x, weight = random(1, c, h, w), random(c, c, 3, 3)
    conv_gflop = 2 * c * c * 9 * h * w / 1e9
    x_cl = x.contiguous(memory_format=torch.channels_last)
    weight_cl = weight.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        gemm_s = _median_seconds(lambda: a @ b, device, problem.repeats)
        conv_s = _median_seconds(lambda: F.conv2d(x, weight, padding=1), device, problem.repeats)
        conv_cl_s = _median_seconds(
            lambda: F.conv2d(x_cl, weight_cl, padding=1), device, problem.repeats
        )
    conv_rates = {"nchw": conv_gflop / conv_s, "channels_last": conv_gflop / conv_cl_s}
    return {
        "gemm": {"shape": [n, n, n], "gflop_per_s": gemm_gflop / gemm_s},
        "conv3x3": {
            "shape": {"batch": 1, "channels": c, "height": h, "width": w},
            "gflop_per_s": conv_rates,
        },
        "repeats": problem.repeats,
        # The floor's rate: the faster convolution layout.
        "rate_gflop_per_s": max(conv_rates.values()),
    }
