"""The ``ACCELERATION.CPU`` config node, read by :func:`~.optimize.optimize_for_cpu`."""

from __future__ import annotations

from detectron2.config import CfgNode

__all__ = ["add_acceleration_config"]


def add_acceleration_config(cfg: CfgNode) -> None:
    """
    Add ``ACCELERATION.CPU`` to ``cfg`` (idempotent). What the inference entry points
    (``train_net.py``'s evaluation, during training and ``--eval-only``; the demo; the
    benchmark) do to a loaded model on the CPU (``MODEL.DEVICE`` "cpu"), never to the model being
    trained. Each changes outputs only by float rounding (the argmax kernel not at all); each
    C kernel option is skipped, with a notice, where the kernel is not built, and each ONNX
    Runtime option where onnxruntime (the ``deploy`` extra) is not installed.
    """
    if "ACCELERATION" in cfg:
        return
    cfg.ACCELERATION = CfgNode()
    cfg.ACCELERATION.CPU = CfgNode()
    cpu = cfg.ACCELERATION.CPU
    # False: the model as the methods define it, on every device.
    cpu.ENABLED = True
    # Batch norms (frozen or with running statistics) folded into the convolutions before them.
    cpu.FOLD_BATCH_NORMS = True
    # The backbone's weights and activations channels-last (oneDNN's native layout); its outputs
    # handed on NCHW-contiguous, except those only 1x1 projections read.
    cpu.CHANNELS_LAST_BACKBONE = True
    # Stride-1 "same"-padded depthwise convolutions (Panoptic-DeepLab's, dilated or not) by ONNX
    # Runtime's grouped Conv.
    cpu.DEPTHWISE_ONNXRUNTIME = True
    # 3x3 deformable convolutions (UPSNet, Panoptic FCN) by a C sampling kernel and one matrix
    # product; their outputs are then channels-last in memory.
    cpu.DEFORMABLE_KERNEL = True
    # The deformable convolutions the C kernel does not run (not built, or DEFORMABLE_KERNEL off)
    # by ONNX Runtime's DeformConv.
    cpu.DEFORMABLE_ONNXRUNTIME = True
    # The post-processing argmax and log-sum-exps over class maps by C kernels.
    cpu.CLASS_MAP_KERNELS = True
    # UPSNet's semantic predictor level by level instead of over the concatenated levels.
    cpu.LEVEL_SUM_PREDICTOR = True
    # DeepLabV3+ decoders upsampling straight into the concatenation instead of copying into it.
    cpu.UPSAMPLE_INTO_CONCAT = True
