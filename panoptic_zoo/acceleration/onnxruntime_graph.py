"""
A rewrite of an exported ONNX graph for ONNX Runtime's CPU provider, applied by the loader
(:func:`panoptic_zoo.deploy.load`); the ``.onnx`` file stays as exported.

ONNX Runtime runs a convolution in its blocked channel layout (NCHWc, fast) only when its input
channels are a multiple of the block (16 with AVX-512; the stem's 3 channels excepted), and
otherwise through im2col. CoordConv layers (Panoptic FCN's kernel and feature towers) convolve
256 feature channels concatenated with 2 coordinate channels: 258.
:func:`split_concatenated_convolutions` writes such a ``Conv`` of a channel ``Concat`` as the
sum of one ``Conv`` per concatenated tensor (the weight split by input channels): the same
function, summed in another order (Panoptic FCN R50 at 800x1333: outputs within 2e-6), with the
feature part in the blocked layout and no concatenated copy (docs/DEPLOYMENT.md).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["node_reads", "split_concatenated_convolutions"]

# ONNX Runtime's widest NCHWc block (AVX-512); a multiple of the others.
_BLOCK_CHANNELS = 16


def _channels(value_info) -> int | None:
    dims = value_info.type.tensor_type.shape.dim if value_info is not None else []
    return dims[1].dim_value if len(dims) == 4 and dims[1].HasField("dim_value") else None


def split_concatenated_convolutions(model):
    """
    A copy of ``model`` (an ``onnx.ModelProto``) in which each ``Conv`` (one group, weight an
    initializer, input channels no multiple of the NCHWc block) that reads a ``Concat`` of 4-D
    tensors along channels, whose channel counts shape inference knows, is one ``Conv`` per
    concatenated tensor (the bias on the first) and ``Add`` nodes; the ``Concat`` goes where
    nothing else reads it.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(model).graph
    infos = {v.name: v for v in [*inferred.input, *inferred.value_info, *inferred.output]}
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    readers = Counter(name for node in graph.node for name in node_reads(node))
    readers.update(output.name for output in graph.output)
    nodes, split_reads = [], Counter()
    for node in graph.node:
        concat = producers.get(node.input[0]) if node.op_type == "Conv" else None
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            concat is None
            or concat.op_type != "Concat"
            or helper.get_attribute_value(concat.attribute[0]) not in (1, -3)
            or node.input[1] not in initializers
            or attributes.get("group", 1) != 1
        ):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        parts = [_channels(infos.get(name)) for name in concat.input]
        in_channels = weight.shape[1]
        if None in parts or sum(parts) != in_channels or in_channels % _BLOCK_CHANNELS == 0:
            nodes.append(node)
            continue
        sums, first = [], 0
        for index, (part, channels) in enumerate(zip(concat.input, parts)):
            name = f"{node.name or node.output[0]}/part{index}"
            part_weight = np.ascontiguousarray(weight[:, first : first + channels])
            graph.initializer.append(numpy_helper.from_array(part_weight, f"{name}/weight"))
            first += channels
            bias = list(node.input[2:3]) if index == 0 else []
            nodes.append(
                helper.make_node(
                    "Conv", [part, f"{name}/weight", *bias], [f"{name}/output"], name=name,
                    **attributes,
                )
            )  # fmt: skip
            sums.append(f"{name}/output")
        total = sums[0]
        for index, addend in enumerate(sums[1:], 1):
            output = node.output[0] if index == len(sums) - 1 else f"{node.output[0]}/sum{index}"
            nodes.append(helper.make_node("Add", [total, addend], [output]))
            total = output
        split_reads[concat.output[0]] += 1
    unread = {name for name, count in split_reads.items() if count == readers[name]}
    del graph.node[:]
    graph.node.extend(n for n in nodes if not (n.op_type == "Concat" and n.output[0] in unread))
    return model


def _subgraph_reads(node) -> set[str]:
    """Names a node's subgraphs (If, Loop, Scan bodies) read from the enclosing graph."""
    from onnx import AttributeProto

    reads = set()
    for attribute in node.attribute:
        graphs = []
        if attribute.type == AttributeProto.GRAPH:
            graphs = [attribute.g]
        elif attribute.type == AttributeProto.GRAPHS:
            graphs = list(attribute.graphs)
        for graph in graphs:
            defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for inner in graph.node:
                reads |= (set(inner.input) | _subgraph_reads(inner)) - defined
                defined |= set(inner.output)
    return reads


def node_reads(node) -> set[str]:
    """The names ``node`` reads, its subgraphs' reads from the enclosing graph included."""
    return (set(node.input) | _subgraph_reads(node)) - {""}
