"""
``get_cfg()``: detectron2's defaults plus every option panoptic_zoo adds.

Each ``add_*_config`` only adds keys of its own that are missing, so it is safe to call twice and
never changes a default another method relies on; solver and input choices live in YAML.
"""

from detectron2.config import CfgNode
from detectron2.config import get_cfg as get_detectron2_cfg

from .modeling.backbones.build import add_mobile_backbone_config
from .modeling.panoptic_deeplab.config import add_panoptic_deeplab_config
from .modeling.panoptic_fcn.config import add_panoptic_fcn_config
from .modeling.upsnet.config import add_upsnet_config
from .utils.config import add_missing_options

__all__ = ["add_panoptic_zoo_config", "get_cfg"]


def add_panoptic_zoo_config(cfg: CfgNode) -> None:
    """Options shared by all methods."""
    if "DATASET_MAPPER_NAME" not in cfg.INPUT:
        # Name in panoptic_zoo.data.DATASET_MAPPER_REGISTRY of the mapper used for training and
        # evaluation; by default detectron2's DatasetMapper with checked inputs.
        cfg.INPUT.DATASET_MAPPER_NAME = "CheckedDatasetMapper"
    # Read by panoptic_zoo.solver: the optimizer (SGD, ADAM, ADAMW) and, for
    # SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR", the poly power and final lr. Defaults keep
    # detectron2's SGD; methods that train otherwise say so in their YAML files.
    add_missing_options(
        cfg.SOLVER, {"OPTIMIZER": "SGD", "POLY_LR_POWER": 0.9, "POLY_LR_CONSTANT_ENDING": 0.0}
    )
    # Read by panoptic_zoo.evaluation.build_evaluators: "panoptic_zoo" (PanopticEvaluator: PQ,
    # panoptic AP and mIoU in one pass, no PNG files) or "panopticapi" (detectron2's
    # COCOPanopticEvaluator, PQ only), the cross-check.
    add_missing_options(cfg.TEST, {"PANOPTIC_EVALUATOR": "panoptic_zoo"})
    # Read by the inference entry points (train_net.py --eval-only, demo, benchmark) after
    # loading the weights, never while training: fold batch norms into their convolutions
    # (panoptic_zoo.modeling.norm_folding); on the CPU, run the backbone channels-last
    # (panoptic_zoo.modeling.memory_format) and stride-1 depthwise convolutions by the project's
    # C kernel (panoptic_zoo.layers.depthwise_conv). Same outputs up to float rounding.
    add_missing_options(
        cfg.TEST,
        {"FOLD_BATCH_NORMS": True, "CHANNELS_LAST_BACKBONE": True, "DEPTHWISE_KERNEL": True},
    )
    # Read by panoptic_zoo.checkpoint: load weights that need full unpickling (detectron2's
    # .pkl/.pyth model-zoo formats, .pth files holding arbitrary objects). Unpickling can run code
    # from the file, so it is an explicit opt-in, for files you trust.
    add_missing_options(cfg.MODEL, {"ALLOW_PICKLED_WEIGHTS": False})


def get_cfg() -> CfgNode:
    """A fresh config with detectron2's defaults and the options of every method."""
    cfg = get_detectron2_cfg()
    add_panoptic_zoo_config(cfg)
    add_upsnet_config(cfg)
    add_panoptic_deeplab_config(cfg)
    add_panoptic_fcn_config(cfg)
    add_mobile_backbone_config(cfg)
    return cfg
