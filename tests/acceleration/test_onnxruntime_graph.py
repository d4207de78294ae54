"""split_concatenated_convolutions: a Conv of a channel Concat as a sum of Convs, against ONNX
Runtime running the graph as written."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from panoptic_zoo.acceleration.onnxruntime_graph import (  # noqa: E402
    split_concatenated_convolutions,
)


def _coord_conv_model(rng, feature_channels, concat_is_output=False, known_channels=True):
    """features (N, C, h, w) and 2 coordinate planes -> Concat -> 3x3 Conv (stride 2, bias)."""
    in_channels = feature_channels + 2
    weight = numpy_helper.from_array(
        rng.standard_normal((8, in_channels, 3, 3), np.float32), "weight"
    )
    bias = numpy_helper.from_array(rng.standard_normal(8, np.float32), "bias")
    channels = feature_channels if known_channels else "c"
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8, "h2", "w2"])]
    if concat_is_output:
        joined = ["n", in_channels if known_channels else "c2", "h", "w"]
        outputs.append(helper.make_tensor_value_info("joined", TensorProto.FLOAT, joined))
    graph = helper.make_graph(
        [helper.make_node("Concat", ["features", "coords"], ["joined"], axis=1),
         helper.make_node("Conv", ["joined", "weight", "bias"], ["out"], name="conv",
                          pads=[1, 1, 1, 1], strides=[2, 2])],
        "coord_conv",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", channels, "h", "w"]),
         helper.make_tensor_value_info("coords", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        outputs, [weight, bias],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    return model


def _run(model, feed):
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)


@pytest.mark.parametrize("concat_is_output", [False, True])
def test_split_gives_the_same_outputs(concat_is_output):
    rng = np.random.default_rng(0)
    model = _coord_conv_model(rng, 32, concat_is_output)
    split = split_concatenated_convolutions(model)
    ops = [node.op_type for node in split.graph.node]
    concat = ["Concat"] if concat_is_output else []
    assert ops == concat + ["Conv", "Conv", "Add"]
    # One part of the weight per concatenated tensor, the bias on the first Conv only.
    convs = [node for node in split.graph.node if node.op_type == "Conv"]
    weights = {t.name: numpy_helper.to_array(t) for t in split.graph.initializer}
    assert [weights[c.input[1]].shape for c in convs] == [(8, 32, 3, 3), (8, 2, 3, 3)]
    assert [len(c.input) for c in convs] == [3, 2]
    feed = {
        "features": rng.standard_normal((2, 32, 11, 7), np.float32),
        "coords": rng.standard_normal((2, 2, 11, 7), np.float32),
    }
    expected, got = _run(model, feed), _run(split, feed)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert expected[0].shape == (2, 8, 6, 4)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert np.abs(expected[0]).max() > 10


def test_blocked_or_unknown_channels_stay():
    """Input channels already a multiple of the block (16 + 2 = 18 is not; 30 + 2 = 32 is), or
    unknown to shape inference: the graph stays as written."""
    rng = np.random.default_rng(1)
    for model in [_coord_conv_model(rng, 30), _coord_conv_model(rng, 16, known_channels=False)]:
        split = split_concatenated_convolutions(model)
        assert [node.op_type for node in split.graph.node] == ["Concat", "Conv"]
    assert len(split_concatenated_convolutions(_coord_conv_model(rng, 16)).graph.node) == 3
