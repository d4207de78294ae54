"""
DeformKernelOnnxSession: an ONNX graph cut at the DeformConv nodes the C kernel computes into
ONNX Runtime sessions, against ONNX Runtime running the whole graph (its own DeformConv).
"""

import numpy as np
import pytest

from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(DEFORM_SAMPLING is None, reason="the C kernel is not built")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from panoptic_zoo.acceleration.onnxruntime_deformable import (  # noqa: E402
    DeformKernelOnnxSession,
    kernel_deform_conv_nodes,
)

CHANNELS = 4
DIMS = ["n", CHANNELS, "h", "w"]
OPSET = 19


def _deform_conv(name, x, offset, out, rng, bias=True, mask="", **attributes):
    """A DeformConv node reading ``x`` with a 3x3 weight (and bias) as initializers."""
    def initializer(shape, suffix):
        return numpy_helper.from_array(rng.standard_normal(shape, np.float32), f"{name}_{suffix}")

    weight = initializer((CHANNELS, CHANNELS, 3, 3), "w")
    initializers = [weight]
    inputs = [x, weight.name, offset]
    if bias:
        initializers.append(initializer(CHANNELS, "b"))
        inputs.append(initializers[-1].name)
    elif mask:
        inputs.append("")
    if mask:
        inputs.append(mask)
    return helper.make_node("DeformConv", inputs, [out], name=name, **attributes), initializers


def _graph_model(rng):
    """
    image -> Relu -> a (kernel, modulated, bias from a Constant node) -> b (kernel, no bias,
    reads a) -> c (stride 2: ONNX Runtime's); an If node whose branches read b from the
    enclosing graph; b plus a Constant node's 0.5; outputs the If's, c's and that sum, and a
    tensor of the first stage (relu).
    """
    a, a_init = _deform_conv("a", "relu", "offset", "a_out", rng, mask="mask", pads=[1, 1, 1, 1])
    b, b_init = _deform_conv("b", "a_out", "offset", "b_out", rng, bias=False, pads=[1, 1, 1, 1])
    c, c_init = _deform_conv(
        "c", "b_out", "offset_half", "c_out", rng, pads=[1, 1, 1, 1], strides=[2, 2]
    )
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["b_out"], ["then_out"])], "then", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, DIMS)],
    )  # fmt: skip
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["b_out"], ["else_out"])], "else", [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, DIMS)],
    )  # fmt: skip
    # a's bias and an addend after b as Constant nodes (as the exporter writes constants).
    a.input[3] = "a_bias"
    a_bias = helper.make_node("Constant", [], ["a_bias"], value=numpy_helper.from_array(
        rng.standard_normal(CHANNELS, np.float32)))  # fmt: skip
    half = helper.make_node("Constant", [], ["half"], value_float=0.5)
    nodes = [
        a_bias, half,
        helper.make_node("Relu", ["image"], ["relu"]),
        a, b, c,
        helper.make_node("Add", ["b_out", "half"], ["b_shifted"]),
        helper.make_node(
            "If", ["flag"], ["chosen"], then_branch=then_branch, else_branch=else_branch
        ),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "deformable",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, DIMS),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["n", 18, "h", "w"]),
         helper.make_tensor_value_info("offset_half", TensorProto.FLOAT, ["n", 18, "h2", "w2"]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 9, "h", "w"]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("chosen", TensorProto.FLOAT, DIMS),
         helper.make_tensor_value_info("c_out", TensorProto.FLOAT, ["n", CHANNELS, "h2", "w2"]),
         helper.make_tensor_value_info("relu", TensorProto.FLOAT, DIMS),
         helper.make_tensor_value_info("b_shifted", TensorProto.FLOAT, DIMS)],
        a_init[:1] + b_init + c_init,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("flag", [True, False])
def test_stages_give_onnxruntimes_outputs(flag):
    rng = np.random.default_rng(0)
    model = _graph_model(rng)
    assert [n.name for n in kernel_deform_conv_nodes(model.graph)] == ["a", "b"]
    height, width = 9, 13  # odd sizes; the stride-2 layer gives 5 x 7
    feed = {
        "image": rng.standard_normal((2, CHANNELS, height, width), np.float32),
        # Offsets of a few pixels: taps between pixels and outside the image.
        "offset": 3 * rng.standard_normal((2, 18, height, width), np.float32),
        "offset_half": 3 * rng.standard_normal((2, 18, 5, 7), np.float32),
        "mask": rng.random((2, 9, height, width), np.float32),
        "flag": np.array(flag),
    }
    expected = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, feed)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    staged = DeformKernelOnnxSession(model, options)
    assert staged.kernel_nodes == 2
    # Relu; a; b; then c, the If and the Add in one session.
    stages = [(run is not None, [n.name for n in kernel]) for run, *_, kernel in staged._stages]
    assert stages == [(True, ["a"]), (False, ["b"]), (True, [])]
    # What the kernel reads as x and writes crosses stage boundaries channels-last.
    (_, first_in, first_out, _), _, (_, last_in, _, _) = staged._stages
    assert sorted(first_out) == ["relu/channels_last"]
    assert "b_out/channels_last" in last_in and "a_out/channels_last" not in last_in
    got = staged.run(None, feed)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    assert np.abs(expected[0]).max() > 1
    # relu, an output the kernel also reads: NCHW shape over channels-last memory, no copy.
    assert got[2].strides == (4 * height * width * CHANNELS, 4, 4 * width * CHANNELS, 4 * CHANNELS)
    (chosen,) = staged.run(["chosen"], feed)
    np.testing.assert_array_equal(chosen, got[0])


def test_other_deform_convs_stay_on_onnxruntime():
    """Dilated, grouped, 5x5 or unpadded (ONNX's default) DeformConv nodes are not the kernel's."""
    rng = np.random.default_rng(1)
    for attributes in [{"dilations": [2, 2], "pads": [2, 2, 2, 2]}, {}, {"pads": [0, 0, 0, 0]},
                       {"pads": [1, 1, 1, 1], "offset_group": 2}]:  # fmt: skip
        node, initializers = _deform_conv("d", "x", "offset", "y", rng, **attributes)
        graph = helper.make_graph([node], "g", [], [], initializers)
        assert kernel_deform_conv_nodes(graph) == []
    node, _ = _deform_conv("d", "x", "offset", "y", rng, pads=[1, 1, 1, 1])
    weight = numpy_helper.from_array(np.zeros((CHANNELS, CHANNELS, 5, 5), np.float32), "d_w")
    assert kernel_deform_conv_nodes(helper.make_graph([node], "g", [], [], [weight])) == []
    assert len(kernel_deform_conv_nodes(helper.make_graph([node], "g", [], []))) == 1


def test_shared_weights_are_constants_of_each_stage():
    """The exporter writes a weight that several layers share as an Identity node of one
    initializer: each stage holds its copy (ONNX Runtime prepacks convolution weights it holds),
    none is fed from an earlier stage."""
    rng = np.random.default_rng(2)
    offset_weight = numpy_helper.from_array(
        0.3 * rng.standard_normal((18, CHANNELS, 3, 3), np.float32), "ow"
    )
    pads = [1, 1, 1, 1]
    first, initializers = _deform_conv("first", "image", "offset1", "first_out", rng, pads=pads)
    second, _ = _deform_conv("second", "first_out", "offset2", "second_out", rng, pads=pads)
    second.input[1:3] = ["shared_w", "offset2"]
    second.input[3] = "shared_b"
    nodes = [
        helper.make_node("Conv", ["image", "ow"], ["offset1"], pads=[1, 1, 1, 1]),
        first,
        helper.make_node("Identity", ["ow"], ["ow_copy"]),
        helper.make_node("Identity", ["first_w"], ["shared_w"]),
        helper.make_node("Identity", ["first_b"], ["shared_b"]),
        helper.make_node("Conv", ["first_out", "ow_copy"], ["offset2"], pads=[1, 1, 1, 1]),
        second,
    ]
    graph = helper.make_graph(
        nodes, "shared",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, DIMS)],
        [helper.make_tensor_value_info("second_out", TensorProto.FLOAT, DIMS)],
        [offset_weight, *initializers],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    feed = {"image": rng.standard_normal((2, CHANNELS, 11, 7), np.float32)}
    expected = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, feed)
    staged = DeformKernelOnnxSession(model, onnxruntime.SessionOptions())
    assert staged.kernel_nodes == 2
    fed = [name for _, inputs, _, _ in staged._stages for name in inputs]
    assert fed == ["image", "first_out/channels_last"]
    np.testing.assert_allclose(staged.run(None, feed)[0], expected[0], rtol=1e-4, atol=1e-4)
