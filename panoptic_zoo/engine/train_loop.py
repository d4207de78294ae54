"""
The pieces of the training loop that make a run stop cleanly and replay exactly:
per-term checks of the losses before the optimizer step, and per-iteration seeding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer
from detectron2.utils import comm

from ..utils.seeding import STEP_STREAM, derived_seed, seed_all_rngs

__all__ = [
    "FiniteLossAMPTrainer",
    "FiniteLossSimpleTrainer",
    "NonFiniteLossError",
    "SeedEachIteration",
    "check_losses_finite",
]


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; training stopped before the optimizer used it."""


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise :class:`NonFiniteLossError` naming every NaN or infinite term of ``loss_dict``."""
    values = {name: loss.detach().float().sum().item() for name, loss in loss_dict.items()}
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        terms = ", ".join(f"{name} = {value}" for name, value in bad.items())
        others = ", ".join(f"{n} = {v:.4g}" for n, v in values.items() if n not in bad) or "none"
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration}: {terms} (other terms: {others}). "
            "Training stopped before the optimizer step: the weights were not updated and no "
            "checkpoint was written after this iteration."
        )


class _FiniteLossMixin:
    """
    Checks every loss term the model returns, before detectron2 logs them, before the backward
    pass and before the optimizer step.

    Through a forward hook held for one ``run_step``, not by overriding detectron2's private
    ``_write_metrics``: its signature differs between detectron2 versions, and with
    ``async_write_metrics=True`` it runs in a thread whose exception nobody sees. Registered at
    each step, the hook runs after any forward hook registered before training, so it checks the
    losses the trainer is about to use.
    """

    def run_step(self) -> None:
        handle = self.model.register_forward_hook(self._check_losses)
        try:
            super().run_step()
        finally:
            handle.remove()

    def _check_losses(self, module, inputs, losses) -> None:
        # detectron2 raises too, but only on the main process, on the sum of the averaged
        # terms, without saying which term.
        if not isinstance(losses, Mapping):
            losses = {"total_loss": losses}  # a model may return the summed loss alone
        check_losses_finite(losses, self.iter)


class FiniteLossSimpleTrainer(_FiniteLossMixin, SimpleTrainer):
    """detectron2's ``SimpleTrainer`` that names the non-finite loss term and iteration."""


class FiniteLossAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """detectron2's ``AMPTrainer`` that names the non-finite loss term and iteration."""


class SeedEachIteration(HookBase):
    """
    Seeds the global random generators before every iteration from ``(seed, iteration, rank)``,
    so the model's random choices in an iteration (proposal sampling, dropout, ...) do not depend
    on how many iterations this process ran before: a resumed run draws what the uninterrupted
    run drew. Data augmentation is seeded per sample by the train loader.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        seed_all_rngs(derived_seed(self.seed, STEP_STREAM, self.trainer.iter, comm.get_rank()))
