"""
The machine's compute floor: sustained float32 rates of a large matrix product and of a 3x3
convolution, at the benchmark's thread count and device.

A method's network cannot run faster than its floating-point operations divided by the
convolution rate (its networks are convolutions), so ``network time / floor`` says how far an
implementation is from what the machine can do. The convolution is timed in both memory layouts
(NCHW and channels-last) and the faster one is the rate used, so a model switched to
channels-last cannot beat its floor. The run measures both rates once at its start, and then
samples the faster convolution again between each method's timed calls
(:class:`ConvRateProbe`): a method's floor uses the rate of the moments it ran.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "FULL_FLOOR", "LAYOUTS", "TINY_FLOOR", "ConvRateProbe", "FloorProblem", "measure_floor",
]  # fmt: skip


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
# The convolution's memory layouts, by the names the report uses.
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


class ConvRateProbe:
    """
    The floor's 3x3 convolution in one memory layout: each call runs it once and returns its
    GFLOP/s. Sampled between a method's timed calls, it gives this machine's rate at the moments
    that method ran (on the shared 2-core machine the rate moves by 10-15 % within a minute).
    """

    def __init__(self, device: torch.device, problem: FloorProblem, layout: str):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown floor layout {layout!r}; choose from {list(LAYOUTS)}")
        generator = torch.Generator().manual_seed(0)
        c, (h, w) = problem.conv_channels, problem.conv_size
        memory_format = LAYOUTS[layout]
        self._x = torch.randn(1, c, h, w, generator=generator).to(
            device, memory_format=memory_format
        )
        self._weight = torch.randn(c, c, 3, 3, generator=generator).to(
            device, memory_format=memory_format
        )
        self._device = device
        self.gflop = 2 * c * c * 9 * h * w / 1e9
        self()  # warm-up: kernel selection, oneDNN primitive creation, allocator

    def seconds(self) -> float:
        # float32 also when sampled between autocast (amp) calls
        with torch.inference_mode(), torch.autocast(self._device.type, enabled=False):
            return _seconds(lambda: F.conv2d(self._x, self._weight, padding=1), self._device)

    def __call__(self) -> float:
        return self.gflop / self.seconds()


def _seconds(run: Callable[[], torch.Tensor], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_floor(device: torch.device, problem: FloorProblem) -> dict:
    """GFLOP/s (2 floating-point operations per multiply-add) of each problem, float32: medians
    of ``problem.repeats`` runs after a warm-up."""
    generator = torch.Generator().manual_seed(0)
    n = problem.gemm_size
    a, b = (torch.randn(n, n, generator=generator).to(device) for _ in range(2))
    with torch.inference_mode():
        _seconds(lambda: a @ b, device)  # warm-up
        gemm_s = statistics.median(_seconds(lambda: a @ b, device) for _ in range(problem.repeats))
    conv_rates = {}
    for layout in LAYOUTS:
        probe = ConvRateProbe(device, problem, layout)
        conv_s = statistics.median(probe.seconds() for _ in range(problem.repeats))
        conv_rates[layout] = probe.gflop / conv_s
    c, (h, w) = problem.conv_channels, problem.conv_size
    fastest = max(conv_rates, key=conv_rates.get)
    return {
        "gemm": {"shape": [n, n, n], "gflop_per_s": 2 * n**3 / 1e9 / gemm_s},
        "conv3x3": {
            "shape": {"batch": 1, "channels": c, "height": h, "width": w},
            "gflop_per_s": conv_rates,
        },
        "repeats": problem.repeats,
        # The floor's rate: the faster convolution layout.
        "layout": fastest,
        "rate_gflop_per_s": conv_rates[fastest],
    }
