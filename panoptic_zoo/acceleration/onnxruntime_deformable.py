"""
An exported ONNX network run by ONNX Runtime's CPU provider, its 3x3 deformable convolutions by
the project's C kernel (:func:`.deform_conv.sampled_deform_conv3x3`, faster than ONNX Runtime's
``DeformConv`` in place: docs/ACCELERATION.md): :class:`DeformKernelOnnxSession` cuts the graph
at those ``DeformConv`` nodes into ONNX Runtime sessions run in turn, the kernel between them.
The ``.onnx`` file stays standard (any runtime runs its ``DeformConv`` nodes); only the loader
(:func:`panoptic_zoo.deploy.load`) chooses this.

A stage is every node that can run once the tensors before it are known, except those
``DeformConv`` nodes; then the ``DeformConv`` nodes whose inputs are known run on the kernel.
Tensors cross a stage boundary as numpy arrays (one copy out of ONNX Runtime); ONNX Runtime
reads fed arrays in place. The tensors the kernel reads and writes in channels-last order (its
inputs ``x`` and its outputs) cross in that order: each stage graph transposes them where it
writes or reads them, and ONNX Runtime folds a transpose into the reorder to or from its
blocked convolution layout where a convolution writes or reads that tensor (UPSNet: all but
four; docs/DEPLOYMENT.md). Shared weights (``Identity`` nodes of initializers) become each
stage's initializers, so that ONNX Runtime prepacks the convolutions that read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .deform_conv import sampled_deform_conv3x3
from .onnxruntime_graph import node_reads

__all__ = ["DeformKernelOnnxSession", "kernel_deform_conv_nodes"]

# NCHW <-> NHWC
_TO_CHANNELS_LAST = [0, 2, 3, 1]
_TO_CHANNELS_FIRST = [0, 3, 1, 2]
_CHANNELS_LAST = "/channels_last"  # suffix of a tensor's name in channels-last order


def _channels_last_info(info):
    """The value info of tensor ``info`` (NCHW) in channels-last order."""
    from onnx import helper

    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
            for d in info.type.tensor_type.shape.dim]  # fmt: skip
    return helper.make_tensor_value_info(
        info.name + _CHANNELS_LAST,
        info.type.tensor_type.elem_type,
        [dims[i] for i in _TO_CHANNELS_LAST] if len(dims) == 4 else None,
    )


# ONNX's defaults of DeformConv's attributes (kernel_shape: the weight's).
_ONNX_DEFAULTS = {
    "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1, "offset_group": 1,
}  # fmt: skip
# The only DeformConv the kernel computes: 3x3 (a computed weight's shape is checked at the call),
# stride 1, "same" padding 1, no dilation, one group and one offset group.
_KERNEL_ATTRIBUTES = {
    "kernel_shape": [3, 3],
    "strides": [1, 1],
    "pads": [1, 1, 1, 1],
    "dilations": [1, 1],
    "group": 1,
    "offset_group": 1,
}


def _attributes(node) -> dict:
    from onnx import helper

    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: list(v) if isinstance(v, Sequence) else v for k, v in values.items()}


def kernel_deform_conv_nodes(graph) -> list:
    """The ``DeformConv`` nodes of ``graph`` (an ``onnx.GraphProto``) that the C kernel
    computes: :data:`_KERNEL_ATTRIBUTES` (absent ones at ONNX's defaults, the kernel shape the
    weight's where it is an initializer)."""
    weight_dims = {t.name: list(t.dims) for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "DeformConv" or node.domain not in ("", "ai.onnx"):
            continue
        kernel_shape = weight_dims.get(node.input[1], [0, 0, 3, 3])[2:]
        attributes = {**_ONNX_DEFAULTS, "kernel_shape": kernel_shape, **_attributes(node)}
        if attributes == _KERNEL_ATTRIBUTES:
            nodes.append(node)
    return nodes


# Constant nodes' attributes that hold numbers, and their dtypes (value: a tensor).
_NUMBERS = {"value": None, "value_float": np.float32, "value_floats": np.float32,
            "value_int": np.int64, "value_ints": np.int64}  # fmt: skip


def _constants_as_initializers(model):
    """A copy of ``model`` whose ``Constant`` nodes, and ``Identity`` nodes of initializers (the
    exporter's form of a weight that several layers share), are initializers: each stage that
    reads one holds it (ONNX Runtime infers shapes from, and prepacks convolution weights of,
    constants it holds, not fed tensors)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attribute = node.attribute[0] if len(node.attribute) == 1 else None
        if node.op_type == "Identity" and node.input[0] in initializers:
            value = onnx.TensorProto()
            value.CopyFrom(initializers[node.input[0]])
        elif node.op_type == "Constant" and attribute is not None and attribute.name in _NUMBERS:
            value = helper.get_attribute_value(attribute)
            if attribute.name != "value":
                value = numpy_helper.from_array(np.array(value, dtype=_NUMBERS[attribute.name]))
        else:
            nodes.append(node)
            continue
        value.name = node.output[0]
        initializers[value.name] = value
        model.graph.initializer.append(value)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


class DeformKernelOnnxSession:
    """
    ``model`` (an ``onnx.ModelProto`` or its path) as ONNX Runtime sessions (``options``, the
    CPU provider) with its :func:`kernel_deform_conv_nodes` on the C kernel between them.
    ``run(output_names, feed)`` as ``onnxruntime.InferenceSession.run``, except that an output
    the kernel reads or writes is an NCHW view of channels-last memory (as eager PyTorch's
    channels-last features); ``kernel_nodes``: how many nodes the kernel runs. The kernel runs
    on ``torch.get_num_threads()`` threads.
    """

    def __init__(self, model, options):
        import onnx
        from onnx import numpy_helper

        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        graph = onnx.shape_inference.infer_shapes(_constants_as_initializers(model)).graph
        self.output_names = [o.name for o in graph.output]
        kernel_nodes = kernel_deform_conv_nodes(graph)
        self.kernel_nodes = len(kernel_nodes)
        kernel_ids = {id(n) for n in kernel_nodes}
        initializers = {t.name for t in graph.initializer}
        # Initializers the kernel reads (weights, biases): as tensors, once.
        self._constants = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
            for t in graph.initializer
            if any(t.name in n.input for n in kernel_nodes)
        }
        value_infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
        known = {i.name for i in graph.input} | initializers
        # Tensors handed over in channels-last order: what the kernel reads as x and writes.
        self._channels_last = {name for n in kernel_nodes for name in (n.input[0], n.output[0])}
        self._channels_last -= known
        remaining = list(graph.node)
        # Each stage: (session or None, its input names, its output names, kernel nodes after it)
        self._stages = []
        while remaining:
            stage, kernel, produced, later = [], [], set(), []
            for node in remaining:  # graph nodes are in topological order
                if id(node) not in kernel_ids and node_reads(node) <= known | produced:
                    stage.append(node)
                    produced |= set(node.output)
                else:
                    later.append(node)
            remaining = []
            for node in later:
                if id(node) in kernel_ids and node_reads(node) <= known | produced:
                    kernel.append(node)
                else:
                    remaining.append(node)
            if not stage and not kernel:
                raise ValueError("the ONNX graph's nodes are not in topological order")
            needed = {name for n in remaining + kernel for name in node_reads(n)}
            needed |= set(self.output_names)
            outputs = [name for n in stage for name in n.output if name in needed]
            inputs = sorted({name for n in stage for name in node_reads(n)} & known - initializers)
            inputs, outputs = self._stage_names(inputs), self._stage_names(outputs)
            session = None
            if stage:
                session = self._session(model, graph, stage, inputs, outputs, value_infos, options)
            self._stages.append((session, inputs, outputs, kernel))
            known |= produced | {name for n in kernel for name in n.output}

    def _stage_names(self, names: list[str]) -> list[str]:
        """A stage's input or output names: those handed over channels-last with the suffix."""
        return [name + _CHANNELS_LAST if name in self._channels_last else name for name in names]

    @staticmethod
    def _session(model, graph, nodes, inputs, outputs, value_infos, options):
        """An ONNX Runtime session of ``nodes``; ``inputs`` and ``outputs`` with the channels-last
        suffix are transposed from and to the stage's NCHW tensors in its graph."""
        import onnxruntime
        from onnx import helper

        reads = {name for n in nodes for name in node_reads(n)}
        tensors = {name.removesuffix(_CHANNELS_LAST): name for name in inputs + outputs}
        untyped = sorted(set(tensors) - set(value_infos))
        if untyped:
            raise ValueError(
                f"ONNX shape inference gives no type for {untyped[:3]}, which cross a cut at "
                "a DeformConv node: load with deformable_kernel=False (ONNX Runtime's DeformConv)"
            )
        infos = {
            stage_name: value_infos[name] if stage_name == name
            else _channels_last_info(value_infos[name])
            for name, stage_name in tensors.items()
        }  # fmt: skip
        into_stage = [
            helper.make_node("Transpose", [stage_name], [name], perm=_TO_CHANNELS_FIRST)
            for name, stage_name in tensors.items() if stage_name != name and stage_name in inputs
        ]  # fmt: skip
        out_of_stage = [
            helper.make_node("Transpose", [name], [stage_name], perm=_TO_CHANNELS_LAST)
            for name, stage_name in tensors.items() if stage_name != name and stage_name in outputs
        ]  # fmt: skip
        stage_graph = helper.make_graph(
            [*into_stage, *nodes, *out_of_stage],
            f"{graph.name}_stage",
            [infos[name] for name in inputs],
            [infos[name] for name in outputs],
            [t for t in graph.initializer if t.name in reads],
        )
        stage_model = helper.make_model(
            stage_graph, opset_imports=model.opset_import, ir_version=model.ir_version
        )
        stage_model.functions.extend(model.functions)
        return onnxruntime.InferenceSession(
            stage_model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def _tensor(self, values: dict, name: str) -> torch.Tensor | None:
        """Tensor ``name`` in NCHW shape (channels-last memory where it was handed over so)."""
        if not name:
            return None
        if name in self._constants:
            return self._constants[name]
        if name in self._channels_last:
            return torch.from_numpy(values[name + _CHANNELS_LAST]).permute(*_TO_CHANNELS_FIRST)
        return torch.from_numpy(values[name])

    def run(self, output_names: Sequence[str] | None, feed: dict) -> list[np.ndarray]:
        values = dict(feed)
        for session, inputs, outputs, kernel in self._stages:
            if session is not None:
                results = session.run(outputs, {name: values[name] for name in inputs})
                values.update(zip(outputs, results))
            for node in kernel:
                x, weight, offset, bias, mask = (
                    self._tensor(values, name) for name in [*node.input, "", ""][:5]
                )
                with torch.no_grad():
                    out = sampled_deform_conv3x3(x, offset, weight, bias, mask)
                # The kernel writes channels-last: handed over as it is.
                values[node.output[0] + _CHANNELS_LAST] = out.permute(*_TO_CHANNELS_LAST).numpy()
        # Outputs handed over channels-last are NCHW views of channels-last memory, as eager
        # PyTorch's channels-last features: no copy.
        return [self._tensor(values, name).numpy() for name in (output_names or self.output_names)]
