"""
Random seeds derived from a base seed and a key (iteration, sample position, rank), so that any
part of a training run can be replayed on its own: a resumed run draws exactly the random numbers
the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from detectron2.utils import comm

__all__ = [
    "SAMPLE_STREAM",
    "STEP_STREAM",
    "derived_seed",
    "isolated_cpu_rngs",
    "seed_all_rngs",
    "training_seed",
]

# The first key element of each use of derived_seed, so that no two uses share a random stream.
SAMPLE_STREAM = 0  # mapping (augmenting) one training sample
STEP_STREAM = 1  # the model's own randomness in one training iteration


def training_seed(cfg) -> int:
    """``cfg.SEED``, or a random seed shared by all processes when it is negative."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def derived_seed(base_seed: int, *key: int) -> int:
    """A 32-bit seed that depends on ``base_seed`` and every element of ``key`` (non-negative)."""
    # SeedSequence hashes the whole key: neighbouring keys give unrelated streams, unlike
    # ``base_seed + i``.
    return int(np.random.SeedSequence([base_seed, *key]).generate_state(1)[0])


def seed_all_rngs(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_cpu_rngs(seed: int) -> Iterator[None]:
    """
    Run the body with Python's, NumPy's and torch's CPU random generators seeded with ``seed``,
    then restore their previous states: the body's draws depend on ``seed`` alone, and the
    caller's draws do not depend on whether (or in which process) the body ran.
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
