"""
Multiply-adds of one inference call, counted by fvcore and split into network and
post-processing.

fvcore traces the call with ``torch.jit`` and counts one fused multiply-add as one "flop", so
its numbers are multiply-adds (MACs); floating-point operations are twice that. What is counted:

* fvcore's own handles: convolutions, matrix products, ``einsum``, linear layers, group/layer/
  instance norms, bilinear and nearest upsampling, adaptive average pooling, ``grid_sample``;
* added here for the ops fvcore skips: torchvision's ``deform_conv2d`` and the project's CPU
  ``panoptic_zoo::sampled_deform_conv3x3`` and ``panoptic_zoo::onnxruntime_deform_conv2d`` (the
  convolution plus 4 multiply-adds per bilinear sample of its input), the project's CPU ``panoptic_zoo::onnxruntime_conv2d`` (as a
  convolution), ``roi_align`` (4 multiply-adds per bilinear sample; 2x2 samples per bin when the
  sampling ratio is adaptive, i.e. <= 0, since the real count depends on the box sizes) and
  ``nms`` (one per pair of boxes);
* not counted: batch norm (detectron2's analysis skips it: it folds into the convolution at
  inference), element-wise operations, reductions, sorting, indexing and comparisons. Their
  names are listed in the report (``uncounted_ops``).

Network multiply-adds are those inside the model's top-level submodules that hold weights
(backbone, heads); the rest, in the meta-architecture's own code, is post-processing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from detectron2.utils.analysis import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

__all__ = ["MultiplyAdds", "count_multiply_adds"]

# Samples per RoIAlign bin assumed when the sampling ratio is adaptive (<= 0).
_ADAPTIVE_ROI_ALIGN_SAMPLES = 2 * 2


def _deformable_macs(input_shape, weight_shape, output_shape) -> int:
    """A deformable convolution: the convolution plus 4 multiply-adds per bilinear sample."""
    in_channels_per_group, kernel_elements = weight_shape[1], weight_shape[2] * weight_shape[3]
    batch, out_channels, *out_size = output_shape
    positions = batch * math.prod(out_size)
    convolution = positions * out_channels * in_channels_per_group * kernel_elements
    bilinear_sampling = 4 * positions * input_shape[1] * kernel_elements
    return convolution + bilinear_sampling


def _deform_conv2d_macs(inputs, outputs) -> int:
    # torchvision::deform_conv2d(input, weight, offset, mask, bias, stride_h, ...)
    return _deformable_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]))


def _sampled_deform_conv3x3_macs(inputs, outputs) -> int:
    # panoptic_zoo::sampled_deform_conv3x3(x, offset, weight, bias, mask)
    return _deformable_macs(get_shape(inputs[0]), get_shape(inputs[2]), get_shape(outputs[0]))


def _convolution_macs(inputs, outputs) -> int:
    # panoptic_zoo::onnxruntime_conv2d(x, weight, ...): in channels per group x k x k per
    # output element
    return math.prod(get_shape(outputs[0])) * math.prod(get_shape(inputs[1])[1:])


def _roi_align_macs(inputs, outputs) -> int:
    # torchvision::roi_align(input, rois, scale, pooled_h, pooled_w, sampling_ratio, aligned)
    sampling_ratio = inputs[5].toIValue()
    samples = sampling_ratio**2 if sampling_ratio > 0 else _ADAPTIVE_ROI_ALIGN_SAMPLES
    return 4 * samples * math.prod(get_shape(outputs[0]))


def _nms_macs(inputs, outputs) -> int:
    boxes = get_shape(inputs[0])[0]
    return boxes * (boxes - 1) // 2


_ADDED_HANDLES = {
    "torchvision::deform_conv2d": _deform_conv2d_macs,
    # (x, weight, offset, mask, bias, node): torchvision's order
    "panoptic_zoo::onnxruntime_deform_conv2d": _deform_conv2d_macs,
    "panoptic_zoo::onnxruntime_conv2d": _convolution_macs,
    "panoptic_zoo::sampled_deform_conv3x3": _sampled_deform_conv3x3_macs,
    "torchvision::roi_align": _roi_align_macs,
    "torchvision::nms": _nms_macs,
}


@dataclass(frozen=True)
class MultiplyAdds:
    network: int
    postprocess: int
    uncounted_ops: tuple[str, ...]

    @property
    def total(self) -> int:
        return self.network + self.postprocess


def count_multiply_adds(model: nn.Module, inputs: list[dict]) -> MultiplyAdds:
    """Multiply-adds of ``model(inputs)`` in eval mode (see the module docstring)."""
    if model.training:
        raise ValueError("count multiply-adds of a model in eval mode")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about every data-dependent branch
        analysis = FlopCountAnalysis(model, inputs)
        analysis.set_op_handle(**_ADDED_HANDLES)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = analysis.by_module()
        total = analysis.total()
        uncounted = tuple(sorted(analysis.unsupported_ops()))
    # detectron2's TracingAdapter wraps the model as its submodule "model".
    network = sum(
        by_module[f"model.{name}"]
        for name, child in model.named_children()
        if next(child.parameters(), None) is not None
    )
    return MultiplyAdds(network=network, postprocess=total - network, uncounted_ops=uncounted)
