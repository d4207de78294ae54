"""
Optimizers and learning-rate schedules by name, for every method.

detectron2 0.6 builds only SGD with step or cosine schedules; Panoptic-DeepLab trains with Adam
and a poly schedule, Panoptic FCN with SGD and a poly schedule, Mask2Former with AdamW, a 0.1
backbone learning rate and clipping of the whole model's gradient norm. Both choices are config values
(``SOLVER.OPTIMIZER``, ``SOLVER.LR_SCHEDULER_NAME``) set in each method's YAML, never by an
``add_*_config``, so no method changes another's solver.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR
from detectron2.solver import build_lr_scheduler as build_detectron2_lr_scheduler
from detectron2.solver.build import (
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)

__all__ = ["OPTIMIZERS", "build_lr_scheduler", "build_optimizer"]


# Weight decay is set per parameter group (``get_default_optimizer_params``), so the norm and
# bias exceptions hold for every optimizer alike.
OPTIMIZERS = {"SGD": torch.optim.SGD, "ADAM": torch.optim.Adam, "ADAMW": torch.optim.AdamW}


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by ``SOLVER.OPTIMIZER`` (SGD, ADAM or ADAMW), with gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"SOLVER.OPTIMIZER = {cfg.SOLVER.OPTIMIZER!r} is not one of {sorted(OPTIMIZERS)}; "
            "set it in the config file or with --opts SOLVER.OPTIMIZER SGD"
        )
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    params = _with_backbone_lr_and_embedding_decay(cfg, model, params)
    momentum = (
        {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV} if name == "SGD" else {}
    )
    clipping = cfg.SOLVER.CLIP_GRADIENTS
    if clipping.ENABLED and clipping.CLIP_TYPE == "full_model":
        optimizer_class = _with_full_model_clipping(
            OPTIMIZERS[name], clipping.CLIP_VALUE, clipping.NORM_TYPE
        )
    else:
        optimizer_class = maybe_add_gradient_clipping(cfg, OPTIMIZERS[name])
    return optimizer_class(params, lr=cfg.SOLVER.BASE_LR, **momentum)


def _with_backbone_lr_and_embedding_decay(cfg: CfgNode, model: torch.nn.Module, groups) -> list:
    """
    ``groups`` where ``SOLVER.BACKBONE_MULTIPLIER`` scales the learning rate of the backbone's
    parameters and ``SOLVER.WEIGHT_DECAY_EMBED`` is the weight decay of ``nn.Embedding`` weights
    (Mask2Former's queries), as the official Mask2Former trainer.
    """
    backbone = {id(p) for name, p in model.named_parameters() if name.startswith("backbone.")}
    embeddings = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    split = []
    for group in groups:
        for parameter in group["params"]:
            settings = {**group, "params": [parameter]}
            if id(parameter) in backbone:
                settings["lr"] = settings["lr"] * cfg.SOLVER.BACKBONE_MULTIPLIER
            if id(parameter) in embeddings:
                settings["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_EMBED
            split.append(settings)
    return reduce_param_groups(split)


def _with_full_model_clipping(optimizer_class, max_norm: float, norm_type: float):
    """``optimizer_class`` whose step first clips the norm of all gradients together
    (``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: full_model``, Mask2Former's recipe; detectron2 clips
    per parameter only)."""

    def step(self, closure=None):
        parameters = [p for group in self.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type)
        return optimizer_class.step(self, closure)

    return type(f"FullModelClipped{optimizer_class.__name__}", (optimizer_class,), {"step": step})


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """``WarmupPolyLR`` (detectron2's DeepLab project) or any of detectron2's own schedules."""
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
        return WarmupPolyLR(
            optimizer,
            cfg.SOLVER.MAX_ITER,
            warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
            warmup_iters=cfg.SOLVER.WARMUP_ITERS,
            warmup_method=cfg.SOLVER.WARMUP_METHOD,
            power=cfg.SOLVER.POLY_LR_POWER,
            constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
        )
    return build_detectron2_lr_scheduler(cfg, optimizer)
