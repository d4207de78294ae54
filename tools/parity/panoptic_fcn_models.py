"""
The two Panoptic FCN models the parity tools compare: the official implementation
(dvlab-research / Jia-Research-Lab ``PanopticFCN``, imported from a local copy given as
``--official-src``) and this project's, built from ONE random initialization: the official model
is initialized, its state dict goes through the real converter
(:func:`panoptic_zoo.model_zoo.converters.convert_official_panoptic_fcn`) and is loaded into ours.

The parity model is tiny (a ResNet-50 of 1/16 width, 32-channel FPN, 64-channel heads, 16-channel
encoder, 3 thing and 3 stuff classes) so that its golden fixtures stay small, and it keeps the
official structure, including the deformable position head: this project's detectron2 routes
``detectron2.layers.deform_conv.ModulatedDeformConv`` to ``torchvision.ops.deform_conv2d`` (the
same operation as detectron2's compiled kernel), so the official deformable layers run unchanged.

    from tools.parity.panoptic_fcn_models import build_model_pair
    official, ours, cfg = build_model_pair("path/to/PanopticFCN")
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from panoptic_zoo.config import get_cfg
from panoptic_zoo.model_zoo.converters import (
    convert_official_panoptic_fcn,
    verify_against_model,
)
from panoptic_zoo.model_zoo.official_panoptic_fcn import (
    import_official,
    official_commit,
    official_config,
)

__all__ = [
    "build_model_pair",
    "calibrate_offsets_",
    "import_official",
    "official_commit",
    "official_config",
    "our_config",
    "randomize_",
]

# The parity model (the official config follows from this project's: official_config). Official
# pixel statistics: RGB-ordered values applied to BGR input, as its configs do.
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [1.0, 1.0, 1.0]
RESNET = {"DEPTH": 50, "RES2_OUT_CHANNELS": 16, "WIDTH_PER_GROUP": 4, "STEM_OUT_CHANNELS": 8}
FPN_CHANNELS = 32
SEMANTIC_FPN_CHANNELS = 32
# 64: two channels per group of the heads' GroupNorm(32), which needs more than one value per
# group on the 1 x 1 P7 of a ~100 px image.
HEAD_CHANNELS = 64
ENCODER_CHANNELS = 16
NUM_THING_CLASSES = 3
NUM_STUFF_CLASSES = 3  # plus the "any thing" class 0 of the stuff branch
STUFF_AREA_LIMIT = 64  # the official 4096 would drop every stuff segment of ~100 px images


def our_config(deform: bool = True) -> CfgNode:
    """This project's config of the same model, official inference settings."""
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "PanopticFCN"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.PIXEL_MEAN = PIXEL_MEAN
    cfg.MODEL.PIXEL_STD = PIXEL_STD
    cfg.MODEL.BACKBONE.NAME = "build_panoptic_fcn_resnet_fpn_backbone"
    for key, value in RESNET.items():
        cfg.MODEL.RESNETS[key] = value
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = FPN_CHANNELS
    fcn = cfg.MODEL.PANOPTIC_FCN
    fcn.NUM_THING_CLASSES = NUM_THING_CLASSES
    fcn.NUM_STUFF_CLASSES = NUM_STUFF_CLASSES
    fcn.POSITION_HEAD.CONVS_DIM = HEAD_CHANNELS
    fcn.POSITION_HEAD.DEFORM = deform
    fcn.KERNEL_HEAD.CONVS_DIM = HEAD_CHANNELS
    fcn.FEATURE_ENCODER.FPN_DIM = SEMANTIC_FPN_CHANNELS
    fcn.FEATURE_ENCODER.NORM = ""  # official: GN in the semantic FPN only
    fcn.FEATURE_ENCODER.CONVS_DIM = ENCODER_CHANNELS
    fcn.INFERENCE.STUFF_AREA_LIMIT = STUFF_AREA_LIMIT
    cfg.TEST.DETECTIONS_PER_IMAGE = 100  # official TOP_NUM
    return cfg


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """
    Every parameter and frozen-norm statistic of ``model`` drawn from ``seed``: weights normal
    with variance 2 / fan-in, biases and norm shifts N(0, 0.1^2), norm scales and variances
    around 1. The initializations of the official heads (std 0.01 outputs) give near-constant
    heatmaps and masks, which would leave most of the inference untested. Three shifts make
    the outputs look like a trained model's (several things and stuff segments per image):
    heatmap biases -2 (sparse peaks), the encoder's last bias -1 (sparser, more local
    features) and 20x the 1x1 kernel embeddings (mask logits of several units, so masks are
    parts of the image rather than all or nothing).
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor, mean, std):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
        if not tensor.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        if tensor.dim() > 1:
            normal(tensor, 0.0, math.sqrt(2.0 / tensor[0].numel()))
        elif leaf in ("running_var",):
            tensor.copy_(1.0 + torch.rand(tensor.shape, generator=generator))
        elif leaf == "weight":  # norm scales
            normal(tensor, 1.0, 0.1)
        else:
            normal(tensor, 0.0, 0.1)
    encoder_layers = sorted(
        k for k in model.state_dict() if k.startswith("feature_encoder.") and k.endswith(".bias")
    )
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.endswith(("out_inst.bias", "out_sem.bias")):
            tensor.add_(-2.0)
        if name.endswith(("embed_extractor.weight", "embed_extractor.bias")):
            tensor.mul_(20.0)
        if name == encoder_layers[-1]:
            tensor.add_(-1.0)


@torch.no_grad()
def calibrate_offsets_(model: torch.nn.Module, seed: int) -> None:
    """
    Scale each deformable layer's offset/modulation convolution so that its outputs have unit
    RMS on a random image: random weights on the unnormalized FPN levels (RMS ~500) would put
    every sampling point far outside the map and make the position head's output constant over
    large regions (ties everywhere).
    """
    convs = [m.offset_mask_conv for m in model.modules() if hasattr(m, "offset_mask_conv")]
    rms = {}

    def record(module, inputs, output):
        rms.setdefault(module, output.pow(2).mean().sqrt())

    hooks = [conv.register_forward_hook(record) for conv in convs]
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 96, 96, generator=generator) * 255
    was_training = model.training
    for conv in convs:  # in order: each layer's input depends on the earlier ones' scales
        rms.clear()
        model.eval()([{"image": image, "height": 96, "width": 96}])
        conv.weight /= rms[conv]
        conv.bias /= rms[conv]
    for hook in hooks:
        hook.remove()
    model.train(was_training)


def build_model_pair(official_src: str | Path, seed: int = 1, deform: bool = True):
    """
    (official model, this project's model, this project's config), both in eval mode on the CPU,
    with the same weights: the official model randomly initialized (:func:`randomize_`,
    :func:`calibrate_offsets_`), ours
    loaded from its state dict through the converter. The official config is
    ``official_model.cfg``.
    """
    official = import_official(official_src)
    cfg = our_config(deform)
    official_model = official.PanopticFCN(official_config(official, cfg))
    randomize_(official_model, seed)
    calibrate_offsets_(official_model, seed)
    our_model = build_model(cfg)
    conversion = convert_official_panoptic_fcn(
        official_model.state_dict(), tuple(cfg.MODEL.PANOPTIC_FCN.FEATURE_ENCODER.IN_FEATURES)
    )
    verify_against_model(conversion, our_model)
    if conversion.notes:
        raise RuntimeError(f"the converter is not exact: {conversion.notes}")
    our_model.load_state_dict(conversion.state_dict)
    return official_model.eval(), our_model.eval(), cfg
