"""
Export a model's network (:class:`~panoptic_zoo.deploy.network.DeployNetwork`) to TorchScript or
ONNX, next to the eager rest that post-processes its outputs (``<export>.eager.pth``).

TorchScript: ``torch.jit.trace``. Layers that run ONNX Runtime sessions or the deformable C
kernel are not exported (:func:`export_config` leaves them out). ONNX: the TorchScript-based
exporter (``dynamo=False``), opset 19: deformable convolutions become ONNX ``DeformConv`` (ONNX
Runtime's CPU provider has a kernel for it), depthwise convolutions grouped ``Conv``,
``linspace`` one that also holds for one step. The dynamo exporter (torch 2.13's default) needs
the ``onnxscript`` package and custom-op translations of its own; the traced exporter needs
neither.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from detectron2.config import CfgNode
from torch import nn
from torch.onnx import symbolic_helper
from torch.utils import _pytree as pytree

from ..acceleration.deform_conv import SampledDeformableConv3x3
from ..modeling.panoptic_deeplab.heads import AnySizeImagePooling
from .network import DeployNetwork

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "eager_part_path",
    "export_config",
    "export_network",
    "network_input",
    "traced_size_range",
]

FORMATS = ("torchscript", "onnx")
# The first opset with DeformConv.
ONNX_OPSET = 19
INPUT_NAME = "images"


def eager_part_path(exported: str | Path) -> Path:
    """Where the eager rest of an export lives: ``<export>.eager.pth``."""
    return Path(f"{exported}.eager.pth")


def _onnx_torchvision_deform_conv2d(
    g, x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    weight_groups, offset_groups, use_mask,
):  # fmt: skip
    """torchvision's ``deform_conv2d`` (the plain deformable layer) as ONNX DeformConv;
    torchvision passes a zero bias where there is none, and a mask only with ``use_mask``."""
    ints = {
        name: symbolic_helper._get_const(value, "i", name)
        for name, value in (
            ("stride_h", stride_h), ("stride_w", stride_w), ("pad_h", pad_h), ("pad_w", pad_w),
            ("dil_h", dil_h), ("dil_w", dil_w), ("weight_groups", weight_groups),
            ("offset_groups", offset_groups),
        )
    }  # fmt: skip
    inputs = [x, weight, offset, bias]
    if symbolic_helper._get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op(
        "DeformConv", *inputs,
        strides_i=[ints["stride_h"], ints["stride_w"]],
        pads_i=[ints["pad_h"], ints["pad_w"], ints["pad_h"], ints["pad_w"]],
        dilations_i=[ints["dil_h"], ints["dil_w"]],
        group_i=ints["weight_groups"], offset_group_i=ints["offset_groups"],
    )  # fmt: skip


def _onnx_linspace(g, start, end, steps, dtype, layout, device, pin_memory):
    """``torch.linspace`` in float32. torch's own translation divides by ``steps - 1``: NaN for
    one step (Panoptic FCN's coordinates of a 1-pixel map), where torch gives ``[start]``."""
    float32 = torch.onnx.TensorProtoDataType.FLOAT
    start, end = (g.op("Cast", x, to_i=float32) for x in (start, end))
    positions = g.op("Cast", symbolic_helper._arange_helper(g, steps, None), to_i=float32)
    one = g.op("Constant", value_t=torch.tensor(1.0))
    intervals = g.op("Max", g.op("Sub", g.op("Cast", steps, to_i=float32), one), one)
    step = g.op("Div", g.op("Sub", end, start), intervals)
    return g.op("Add", g.op("Mul", positions, step), start)


torch.onnx.register_custom_op_symbolic("aten::linspace", _onnx_linspace, ONNX_OPSET)
torch.onnx.register_custom_op_symbolic(
    "torchvision::deform_conv2d", _onnx_torchvision_deform_conv2d, ONNX_OPSET
)


class _NetworkInput(Exception):
    def __init__(self, images: torch.Tensor):
        self.images = images


@torch.no_grad()
def network_input(model: nn.Module, batched_inputs: list[dict]) -> torch.Tensor:
    """The normalized, padded batch that ``model``'s own preprocessing makes of
    ``batched_inputs``: its backbone's input (the model stops there)."""

    def stop(module, args):
        raise _NetworkInput(args[0])

    handle = model.backbone.register_forward_pre_hook(stop)
    try:
        model(batched_inputs)
    except _NetworkInput as captured:
        return captured.images
    finally:
        handle.remove()
    raise RuntimeError(f"{type(model).__name__} did not call its backbone")


def traced_size_range(model: nn.Module, example: torch.Tensor) -> list[list[int | None]]:
    """
    ``[[min, max], [min, max]]``: the padded heights and widths (max None: no bound) for which
    a trace of ``model``'s network on ``example`` holds. A trace keeps the branch its input
    took, and ASPP's image pooling (Panoptic-DeepLab) takes one per side of its window: a
    global mean where the map is within the window, a window of the traced size where it is
    larger (ONNX Runtime fails inside the graph on a map smaller than that window). The pooled
    map is the backbone's coarsest (ASPP reads res5).
    """
    ranges = [[1, None], [1, None]]
    poolings = [m for m in model.modules() if isinstance(m, AnySizeImagePooling)]
    if not poolings:
        return ranges
    pooled = []

    def record(module, args):
        pooled.append((module.kernel_size, tuple(args[0].shape[-2:])))

    handles = [m.register_forward_pre_hook(record) for m in poolings]
    try:
        with torch.no_grad():
            DeployNetwork(model).eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    stride = max(shape.stride for shape in model.backbone.output_shape().values())
    padded = tuple(example.shape[-2:])
    for window, traced in pooled:
        if traced != tuple(-(-p // stride) for p in padded):
            raise ValueError(
                f"image pooling of a {traced} map of a {padded} input: not the backbone's "
                f"coarsest map (stride {stride}); panoptic_zoo/deploy/export.py assumes it is"
            )
        within = all(t <= w for t, w in zip(traced, window))
        for side, (w, t) in enumerate(zip(window, traced)):
            if within:  # the global mean: maps up to the window
                bounds = (1, w * stride)
            elif t >= w:  # a window of this size: maps at least as large
                bounds = ((w - 1) * stride + 1, None)
            else:  # the whole side: maps of this size
                bounds = ((t - 1) * stride + 1, t * stride)
            highs = [x for x in (ranges[side][1], bounds[1]) if x is not None]
            ranges[side] = [max(ranges[side][0], bounds[0]), min(highs) if highs else None]
    return ranges


def export_config(cfg: CfgNode, format: str) -> CfgNode:
    """
    ``cfg`` on the CPU, with the CPU optimizations (``ACCELERATION.CPU``) that ``format`` can hold:
    none of the layers run by the deformable C kernel or ONNX Runtime sessions (an export holds
    the plain layers: ONNX DeformConv and grouped Conv, TorchScript's torchvision and oneDNN
    ops); ONNX without the
    channels-last backbone, whose NCHW copy of the features (written into a view) the ONNX
    tracer drops; ONNX Runtime chooses its own layouts.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.ACCELERATION.CPU.DEFORMABLE_KERNEL = False
    cfg.ACCELERATION.CPU.DEFORMABLE_ONNXRUNTIME = False
    cfg.ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME = False
    if format == "onnx":
        cfg.ACCELERATION.CPU.CHANNELS_LAST_BACKBONE = False
    cfg.freeze()
    return cfg


def _leaf_modules_called(model: nn.Module, run: Callable) -> tuple[object, list[str]]:
    """``run()``'s result and the paths of the modules without children of ``model`` it called."""
    called = set()
    handles = [
        module.register_forward_hook(lambda *_, path=path: called.add(path))
        for path, module in model.named_modules()
        if next(module.children(), None) is None
    ]
    try:
        result = run()
    finally:
        for handle in handles:
            handle.remove()
    return result, sorted(called)


@torch.no_grad()
def export_network(
    model: nn.Module,
    cfg: CfgNode,
    example: torch.Tensor,
    output: str | Path,
    format: str,
    dynamic: bool = False,
) -> Path:
    """
    Export the network of the eval-mode ``model`` (built from ``cfg`` = :func:`export_config`,
    weights loaded, inference changes applied), traced on ``example`` (a normalized, padded
    batch), to ``output``: for that input shape only or, with ``dynamic``, for any batch size
    and padded image size. Writes the eager rest beside it (config, every weight of modules the
    exported network does not call, output structure). Returns ``output``.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    held = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if hasattr(m, "onnxruntime_node") or isinstance(m, SampledDeformableConv3x3)
        }
    )
    if held:
        raise ValueError(
            f"the model holds layers that run ONNX Runtime sessions or the deformable C kernel "
            f"({', '.join(held)}), which an export cannot hold: optimize it with "
            "export_config(cfg)"
        )
    network = DeployNetwork(model).eval()
    outputs, network_modules = _leaf_modules_called(model, lambda: network(example))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output_names = [f"output{i}" for i in range(len(outputs))]
    with warnings.catch_warnings():
        # The tracers' warnings on Python values read from tensor shapes: the checks in
        # panoptic_zoo.deploy.check run the export on other sizes and compare.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if format == "torchscript":
            torch.jit.trace(network, (example,), check_trace=False).save(str(output))
        else:
            axes = None
            if dynamic:
                axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
                axes.update({name: dict(enumerate(f"{name}_{d}" for d in range(x.dim())))
                             for name, x in zip(output_names, outputs)})  # fmt: skip
            torch.onnx.export(
                network, (example,), str(output), dynamo=False, opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=axes,
            )  # fmt: skip
    # The export holds the weights of the modules its network calls; the eager rest every other
    # weight, those of exported heads that only post-processing reads included (Panoptic FCN's
    # stuff embedding).
    eager_state = {
        k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] not in network_modules
    }
    torch.save(
        {
            "format": format,
            "config": cfg.dump(),
            "input_shape": None if dynamic else list(example.shape),
            "padded_size_range": traced_size_range(model, example),
            "output_spec": pytree.treespec_dumps(network.spec),
            "eager_state_dict": eager_state,
            "network_modules": network_modules,
        },
        eager_part_path(output),
    )
    return output
