"""Optimizer and schedule choice by config (panoptic_zoo.solver), through the real Trainer hooks."""

import pytest
import torch
from detectron2.solver import build_optimizer as build_detectron2_optimizer

from panoptic_zoo.config import add_panoptic_zoo_config, get_cfg
from panoptic_zoo.engine import Trainer


def tiny_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))


def solver_cfg(**options):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    for key, value in options.items():
        cfg.SOLVER[key] = value
    return cfg


def group_summary(optimizer):
    return sorted(
        (group["lr"], group["weight_decay"], tuple(p.shape for p in group["params"]))
        for group in optimizer.param_groups
    )


def test_default_is_detectron2_sgd():
    cfg = solver_cfg()
    model = tiny_model()
    ours, theirs = Trainer.build_optimizer(cfg, model), build_detectron2_optimizer(cfg, model)
    assert type(ours) is type(theirs) is torch.optim.SGD
    assert group_summary(ours) == group_summary(theirs)
    assert ours.defaults["momentum"] == theirs.defaults["momentum"] == 0.9


def test_adam_keeps_the_norm_weight_decay_exception():
    model = tiny_model()
    optimizer = Trainer.build_optimizer(solver_cfg(OPTIMIZER="ADAM"), model)
    assert isinstance(optimizer, torch.optim.Adam)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    conv, norm = model
    assert decay[id(conv.weight)] == decay[id(conv.bias)] == 1e-4
    assert decay[id(norm.weight)] == decay[id(norm.bias)] == 0.0


def test_gradient_clipping_applies_to_adam():
    cfg = solver_cfg(OPTIMIZER="ADAMW")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = torch.nn.Linear(1, 1, bias=False)
    optimizer = Trainer.build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    model.weight.grad = torch.tensor([[7.0]])
    optimizer.step()
    assert model.weight.grad.item() == 0.5


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER = 'LAMB'"):
        Trainer.build_optimizer(solver_cfg(OPTIMIZER="LAMB"), tiny_model())


def test_poly_schedule_matches_the_formula():
    # lr(t) = base_lr * (1 - t / max_iter) ** power after a linear warm-up of 2 iterations.
    cfg = solver_cfg(LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=10, WARMUP_ITERS=2,
                     WARMUP_FACTOR=0.5, POLY_LR_POWER=0.9)  # fmt: skip
    model = torch.nn.Linear(1, 1)
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = [0.5, 0.75]  # factor * (1 - alpha) + alpha, alpha = t / warmup_iters
    expected = [0.1 * (warmup[t] if t < 2 else 1.0) * (1 - t / 10) ** 0.9 for t in range(10)]
    assert seen == pytest.approx(expected, rel=1e-12)


def test_shared_solver_options_are_neutral_and_added_once():
    cfg = get_cfg()
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.LR_SCHEDULER_NAME) == ("SGD", "WarmupMultiStepLR")
    cfg.SOLVER.OPTIMIZER = "ADAM"
    add_panoptic_zoo_config(cfg)
    assert cfg.SOLVER.OPTIMIZER == "ADAM"
