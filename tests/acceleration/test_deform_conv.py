"""The deformable convolution's CPU inference path by ONNX Runtime's DeformConv against
torchvision's kernel; the layers optimize_for_cpu switches (ONNX Runtime's and the C kernel's)."""

import copy

import pytest
import torch
from torchvision.ops import deform_conv2d

from panoptic_zoo.acceleration import deform_conv
from panoptic_zoo.acceleration.deform_conv import (
    OnnxRuntimeDeformableConv3x3,
    SampledDeformableConv3x3,
    use_deform_sampling_kernel,
    use_onnxruntime_deformable_convolutions,
)
from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING
from panoptic_zoo.layers import DeformableConv3x3

pytest.importorskip("onnxruntime")


def _layer(modulated: bool, bias: bool, seed: int = 0) -> OnnxRuntimeDeformableConv3x3:
    torch.manual_seed(seed)
    layer = OnnxRuntimeDeformableConv3x3(5, 7, bias=bias, modulated=modulated).eval()
    with torch.no_grad():
        layer.offset.weight.normal_(0, 1)  # offsets of several pixels; modulation not 0.5
        if bias:
            layer.bias.normal_()
    return layer


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 9, 13), (2, 5, 1, 7), (1, 5, 6, 1)])
def test_onnxruntime_path_is_torchvision_deform_conv(shape, modulated, bias):
    layer = _layer(modulated, bias)
    x = torch.randn(shape)
    with torch.no_grad():
        offset, mask = layer.offsets_and_mask(x)
        expected = deform_conv2d(x, offset, layer.weight, layer.bias, padding=(1, 1), mask=mask)
        got = layer(x)
        # Channels-last input (what oneDNN layers leave) reads the same.
        channels_last = layer(x.contiguous(memory_format=torch.channels_last))
    assert offset.abs().max() > 2 and expected.abs().max() > 0
    assert layer.onnxruntime_node._session is not None  # ONNX Runtime ran
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(channels_last, expected, rtol=1e-5, atol=1e-5)


def test_session_follows_weights_threads_and_copies():
    layer = _layer(modulated=True, bias=True)
    x = torch.randn(2, 5, 7, 9)
    threads = torch.get_num_threads()
    with torch.no_grad():
        before = layer(x)
        session = layer.onnxruntime_node._session
        layer(torch.randn(1, 5, 11, 4))  # another size: the same session
        assert layer.onnxruntime_node._session is session
        layer.weight.mul_(2)  # weights changed in place: a new session
        layer.bias.mul_(2)
        torch.testing.assert_close(layer(x), 2 * before, rtol=1e-5, atol=1e-5)
        assert layer.onnxruntime_node._session is not session
        session = layer.onnxruntime_node._session
        torch.set_num_threads(1 if threads > 1 else 2)
        try:
            layer(x)
            options = layer.onnxruntime_node._session.get_session_options()
            assert options.intra_op_num_threads == torch.get_num_threads()
        finally:
            torch.set_num_threads(threads)
        copied = copy.deepcopy(layer)
        assert copied.onnxruntime_node.key != layer.onnxruntime_node.key
        copied.weight.zero_()
        torch.testing.assert_close(layer(x), 2 * before, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copied(x), layer.bias.view(1, -1, 1, 1).expand_as(before))


# The two CPU inference paths of DeformableConv3x3 that optimize_for_cpu puts in: (the op the
# layer calls, the replacing function, the layer type).
INFERENCE_PATHS = [
    pytest.param(
        "onnxruntime_deform_conv2d", use_onnxruntime_deformable_convolutions,
        OnnxRuntimeDeformableConv3x3, id="onnxruntime",
    ),
    pytest.param(
        "sampled_deform_conv3x3", use_deform_sampling_kernel, SampledDeformableConv3x3,
        id="c_kernel", marks=pytest.mark.skipif(
            DEFORM_SAMPLING is None, reason="the C kernel is not built"
        ),
    ),
]  # fmt: skip


@pytest.mark.parametrize("op, use, layer_type", INFERENCE_PATHS)
def test_replaced_module_uses_its_path_only_for_float32_inference(monkeypatch, op, use, layer_type):
    calls = []
    original = getattr(deform_conv, op)
    monkeypatch.setattr(deform_conv, op, lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    plain = torch.nn.Sequential(DeformableConv3x3(4, 6, modulated=True))
    torch.nn.init.normal_(plain[0].offset.weight, std=0.5)  # nonzero offsets and modulation
    x = torch.randn(2, 4, 11, 9, requires_grad=True)
    with torch.no_grad():
        plain_output = plain(x)
    assert not calls  # the method's module: torchvision's kernel always
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    assert use(plain) == 1
    layer = plain[0]
    assert type(layer) is layer_type
    assert state.keys() == plain.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())
    trained = layer(x)  # torchvision, with its backward
    trained.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None and not calls
    with torch.no_grad():
        inferred = layer(x)
        assert calls
        torch.testing.assert_close(inferred, plain_output, rtol=1e-5, atol=1e-5)
        calls.clear()
        in_float64 = layer.double()(x.double())  # torchvision's kernel takes other dtypes
    assert not calls
    torch.testing.assert_close(in_float64.float(), trained.detach(), rtol=1e-5, atol=1e-5)
