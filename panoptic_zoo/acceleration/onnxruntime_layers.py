"""
Layers run for CPU inference by ONNX Runtime, one ONNX node per session: where a library path
beats the project's C kernels (``tools/kernel_speed.py``, docs/ACCELERATION.md), i.e. the
deformable convolutions (ONNX ``DeformConv``) and the undilated depthwise ones (grouped ``Conv``).

A layer's weights are the session's initializers; its activations are fed per call (any batch
size and image size). The session is built at the first call, and again when the weights
change (in place or replaced) or PyTorch's thread count does: its intra-op threads are
``torch.get_num_threads()`` at the call, as for PyTorch's own ops. Each call goes through a
custom op (``panoptic_zoo::onnxruntime_deform_conv2d``, ``panoptic_zoo::onnxruntime_conv2d``)
that finds the layer's node by an integer key: traces (fvcore's counts in
:mod:`panoptic_zoo.benchmark.flops`) then see one convolution.

onnxruntime is the optional ``deploy`` extra (:func:`onnxruntime_installed`).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence

import torch

__all__ = [
    "OnnxRuntimeNode",
    "onnxruntime_conv2d",
    "onnxruntime_deform_conv2d",
    "onnxruntime_installed",
]

_NODES: weakref.WeakValueDictionary[int, OnnxRuntimeNode] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def onnxruntime_installed() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` import (the ``deploy`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxRuntimeNode:
    """
    One ONNX node of type ``op_type`` run by ONNX Runtime's CPU provider: ``inputs`` are its
    input names in the operator's order ("" for an absent optional one), of which ``constants``
    (the weights) become initializers; ``attributes`` are the node's; its one output has
    ``output_rank`` dimensions of ``output_dtype``. Call it with a tensor for each input name;
    returns the node's output. Copies (``copy.deepcopy``, pickling)
    get a new key and build their own session.
    """

    def __init__(
        self,
        op_type: str,
        inputs: Sequence[str],
        constants: Sequence[str],
        attributes: dict,
        output_rank: int = 4,
        output_dtype: str = "float32",
    ):
        self.op_type = op_type
        inputs = list(inputs)
        while inputs and not inputs[-1]:  # absent trailing inputs are left out
            inputs.pop()
        self.inputs = tuple(inputs)
        self.constants = tuple(constants)
        self.attributes = dict(attributes)
        self.output_rank = output_rank
        self.output_dtype = output_dtype
        self.key = next(_KEYS)
        _NODES[self.key] = self
        self._session = None
        self._session_state = None

    def __reduce__(self):
        return type(self), (
            self.op_type, self.inputs, self.constants, self.attributes, self.output_rank,
            self.output_dtype,
        )  # fmt: skip

    def __call__(self, **tensors: torch.Tensor | None) -> torch.Tensor:
        constants = {name: tensors[name] for name in self.constants if name in self.inputs}
        # Tensors' versions count their in-place changes; data pointers their replacement.
        state = (torch.get_num_threads(),) + tuple(
            (t.data_ptr(), t._version) for t in constants.values()
        )
        feed = {
            name: tensors[name].detach().contiguous().numpy()
            for name in self.inputs
            if name and name not in self.constants
        }
        if state != self._session_state:
            self._session = self._build_session(constants, feed, state[0])
            self._session_state = state
        (output,) = self._session.run(None, feed)
        return torch.from_numpy(output)

    def _build_session(self, constants: dict[str, torch.Tensor], feed: dict, threads: int):
        import numpy as np
        import onnx
        import onnxruntime
        from onnx import helper, numpy_helper

        from ..deploy.export import ONNX_OPSET

        def free_shape(name: str, rank: int) -> list[str]:
            # Every size free (batch, height, width): one session for every image size.
            return [f"{name}_{d}" for d in range(rank)]

        node = helper.make_node(self.op_type, list(self.inputs), ["output"], **self.attributes)
        graph = helper.make_graph(
            [node],
            self.op_type,
            [
                helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(x.dtype), free_shape(name, x.ndim)
                )
                for name, x in feed.items()
            ],
            [
                helper.make_tensor_value_info(
                    "output",
                    helper.np_dtype_to_tensor_dtype(np.dtype(self.output_dtype)),
                    free_shape("output", self.output_rank),
                )
            ],
            [numpy_helper.from_array(constants[name].detach().numpy(), name) for name in constants],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
        onnx.checker.check_model(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Its threads otherwise spin-wait after each call, on the cores PyTorch's ops run on next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )


@torch.library.custom_op("panoptic_zoo::onnxruntime_deform_conv2d", mutates_args=())
def onnxruntime_deform_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    bias: torch.Tensor | None,
    node: int,
) -> torch.Tensor:
    """The ONNX ``DeformConv`` node of key ``node`` on these tensors (torchvision's
    ``deform_conv2d`` argument order, which the FLOP count reads)."""
    return _NODES[node](X=x, W=weight, offset=offset, B=bias, mask=mask)


@torch.library.custom_op("panoptic_zoo::onnxruntime_conv2d", mutates_args=())
def onnxruntime_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, node: int
) -> torch.Tensor:
    """The ONNX ``Conv`` node of key ``node`` on these tensors."""
    return _NODES[node](X=x, W=weight, B=bias)
