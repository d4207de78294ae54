"""The benchmark's network/post-processing split of time and of multiply-adds, on a toy model."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import DeformConv2d

from panoptic_zoo.benchmark.floor import TINY_FLOOR, ConvRateProbe
from panoptic_zoo.benchmark.flops import count_multiply_adds
from panoptic_zoo.benchmark.timing import NetworkSplitClock, time_alternately, time_inference

SIZE = 8  # input height and width
POSTPROCESS_SLEEP_S = 0.2  # far above the toy network's time, also on a loaded machine


class ToyModel(nn.Module):
    """A convolution and a deformable convolution (the network), then a parameter-free
    matrix product and a pause (the post-processing)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.offsets = nn.Conv2d(8, 2 * 3 * 3, 3, padding=1)
        self.deform = DeformConv2d(8, 4, 3, padding=1)

    def forward(self, batched_inputs):
        x = self.conv(batched_inputs[0]["image"].float()[None])
        y = self.deform(x, self.offsets(x)).flatten(2)
        time.sleep(POSTPROCESS_SLEEP_S)
        return [{"sem_seg": y @ y.transpose(1, 2)}]


def _inputs():
    return [{"image": torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)}]


def test_network_ends_when_the_last_module_with_weights_returns():
    model = ToyModel().eval()
    clock = NetworkSplitClock(model, torch.device("cpu"))
    with torch.inference_mode():
        model(_inputs())  # warm-up: the first convolution call sets up its kernels
        clock.start()
        model(_inputs())
        network_s, postprocess_s = clock.stop()
    clock.close()
    assert postprocess_s >= POSTPROCESS_SLEEP_S > network_s > 0
    assert not any(m._forward_hooks for m in model.modules())


class _EventLog(ToyModel):
    def __init__(self, events: list[str]):
        super().__init__()
        self.events = events

    def forward(self, batched_inputs):
        self.events.append("call")
        return super().forward(batched_inputs)


def test_floor_samples_run_between_the_timed_calls_and_are_not_timed():
    events = []
    hook_sleep_s = 0.5  # the toy call takes POSTPROCESS_SLEEP_S (0.2 s) and a little more

    def between():
        events.append("floor")
        time.sleep(hook_sleep_s)

    timing = time_inference(
        _EventLog(events).eval(), _inputs(), warmup=1, repeats=2, before_each_timed_call=between
    )
    assert events == ["call", "floor", "call", "floor", "call"]
    samples = zip(timing["network_samples_s"], timing["postprocess_samples_s"])
    assert all(POSTPROCESS_SLEEP_S <= network + post < hook_sleep_s for network, post in samples)


def test_models_are_timed_in_turns_one_call_each_per_round():
    events = []

    class Named(ToyModel):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, batched_inputs):
            events.append(self.name)
            return super().forward(batched_inputs)

    timings = time_alternately(
        {"a": Named("a").eval(), "b": Named("b").eval()}, _inputs(), warmup=1, repeats=2,
        before_each_timed_round=lambda: events.append("floor"),
    )  # fmt: skip
    assert events == ["a", "b", "floor", "a", "b", "floor", "a", "b"]
    assert set(timings) == {"a", "b"}
    for timing in timings.values():
        assert len(timing["network_samples_s"]) == len(timing["postprocess_samples_s"]) == 2
        assert timing["postprocess_s"] >= POSTPROCESS_SLEEP_S > timing["network_s"] > 0


def test_conv_rate_probe_times_float32_also_under_autocast(monkeypatch):
    probe = ConvRateProbe(torch.device("cpu"), TINY_FLOOR, "channels_last")
    channels, (height, width) = TINY_FLOOR.conv_channels, TINY_FLOOR.conv_size
    assert probe.gflop == 2 * channels**2 * 9 * height * width / 1e9
    output_dtypes = []
    conv2d = torch.nn.functional.conv2d

    def recording_conv2d(*args, **kwargs):
        output = conv2d(*args, **kwargs)
        output_dtypes.append(output.dtype)
        return output

    monkeypatch.setattr(torch.nn.functional, "conv2d", recording_conv2d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv2d(probe._x, probe._weight).dtype == torch.bfloat16  # autocast is on
        assert probe() > 0
    assert output_dtypes == [torch.float32]
    with pytest.raises(ValueError, match="unknown floor layout 'nhwc'"):
        ConvRateProbe(torch.device("cpu"), TINY_FLOOR, "nhwc")


def test_multiply_adds_of_network_and_postprocessing():
    pixels = SIZE * SIZE
    macs = count_multiply_adds(ToyModel().eval(), _inputs())
    convolutions = (3 * 8 + 8 * 18 + 8 * 4) * 9 * pixels
    deformable_sampling = 4 * 8 * 9 * pixels  # 4 multiply-adds per bilinear sample
    assert macs.network == convolutions + deformable_sampling
    assert macs.postprocess == 4 * 4 * pixels  # (4 x HW) @ (HW x 4)


def test_multiply_adds_of_the_cpu_deformable_convolution():
    """Its CPU inference ops (panoptic_zoo::onnxruntime_deform_conv2d, and the C kernel's) count
    as torchvision's: the model with them counts what the plain model counts."""
    pytest.importorskip("onnxruntime")
    from panoptic_zoo.acceleration.deform_conv import (
        use_deform_sampling_kernel,
        use_onnxruntime_deformable_convolutions,
    )
    from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING
    from panoptic_zoo.layers import DeformableConv3x3

    class DeformableModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.deform = DeformableConv3x3(3, 4)

        def forward(self, batched_inputs):
            return [{"sem_seg": self.deform(batched_inputs[0]["image"].float()[None])}]

    pixels = SIZE * SIZE
    model = DeformableModel().eval()
    plain = count_multiply_adds(model, _inputs())
    assert use_onnxruntime_deformable_convolutions(model) == 1
    with torch.no_grad():
        macs = count_multiply_adds(model, _inputs())
    assert model.deform.onnxruntime_node._session is not None  # the trace ran ONNX Runtime
    offsets, convolution = 3 * 18 * 9 * pixels, 3 * 4 * 9 * pixels
    assert macs.network == offsets + convolution + 4 * 3 * 9 * pixels  # 4 per sample of 3 channels
    assert macs == plain and not macs.uncounted_ops
    if DEFORM_SAMPLING is not None:  # the C kernel's op (panoptic_zoo::sampled_deform_conv3x3)
        model = DeformableModel().eval()
        assert use_deform_sampling_kernel(model) == 1
        with torch.no_grad():
            assert count_multiply_adds(model, _inputs()) == plain


def test_multiply_adds_of_the_cpu_depthwise_convolutions():
    """Their CPU inference op (panoptic_zoo::onnxruntime_conv2d), dilated or not, counts as a
    convolution."""
    pytest.importorskip("onnxruntime")
    from detectron2.layers import Conv2d

    from panoptic_zoo.acceleration.depthwise_conv import use_onnxruntime_depthwise_convolutions

    class DepthwiseModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.dilated = Conv2d(3, 3, 5, padding=4, dilation=2, groups=3, activation=F.relu)
            self.undilated = Conv2d(3, 3, 5, padding=2, groups=3)

        def forward(self, batched_inputs):
            x = batched_inputs[0]["image"].float()[None]
            return [{"sem_seg": self.undilated(self.dilated(x))}]

    model = DepthwiseModel().eval()
    plain = count_multiply_adds(model, _inputs())
    assert plain.network == 2 * 3 * 25 * SIZE * SIZE
    assert use_onnxruntime_depthwise_convolutions(model) == 2
    assert count_multiply_adds(model, _inputs()) == plain and not plain.uncounted_ops
