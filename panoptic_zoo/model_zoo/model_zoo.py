"""
Configs and trained checkpoints by name, like ``detectron2.model_zoo``, without any network:

    from panoptic_zoo import model_zoo
    model = model_zoo.get("shapes/panoptic_fpn_R_18.yaml", trained=True)

A config path is relative to the project's ``configs/`` directory. Its trained checkpoint is
``<model zoo dir>/<config path without .yaml>/model_final.pth``, where the model zoo dir is
``$PANOPTIC_ZOO_MODEL_ZOO`` or ``~/.cache/panoptic_zoo/model_zoo``;
``tools/train_model_zoo.py`` trains, evaluates and installs it there (docs/MODEL_ZOO.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from ..checkpoint import build_checkpointer
from ..config import get_cfg

# configs/ beside the package: the project is installed editable (uv sync), so the checkout's
# configs are found from any working directory.
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CHECKPOINT_NAME = "model_final.pth"


class CheckpointNotInstalledError(FileNotFoundError):
    """The model zoo has no trained checkpoint for a config (yet)."""


def model_zoo_root() -> Path:
    """``$PANOPTIC_ZOO_MODEL_ZOO``, or ``~/.cache/panoptic_zoo/model_zoo``."""
    default = Path.home() / ".cache" / "panoptic_zoo" / "model_zoo"
    return Path(os.environ.get("PANOPTIC_ZOO_MODEL_ZOO", default)).expanduser()


def _relative_config(config_path: str) -> Path:
    relative = Path(config_path)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".yaml":
        raise ValueError(
            f"a model zoo config is a .yaml path relative to {CONFIG_ROOT}, e.g. "
            f"'shapes/panoptic_fpn_R_18.yaml'; got {config_path!r}"
        )
    return relative


def get_config_file(config_path: str) -> str:
    """Absolute path of ``configs/<config_path>``; a clear error lists the configs if it is missing."""
    path = CONFIG_ROOT / _relative_config(config_path)
    if not path.is_file():
        known = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))
        raise FileNotFoundError(
            f"{config_path!r} is not a config of the model zoo (looked for {path}); "
            f"available: {', '.join(k for k in known if '/Base-' not in k)}"
        )
    return str(path)


def checkpoint_path(config_path: str) -> Path:
    """Where the trained checkpoint of ``config_path`` lives in the model zoo (installed or not)."""
    return model_zoo_root() / _relative_config(config_path).with_suffix("") / CHECKPOINT_NAME


def get_checkpoint_path(config_path: str) -> str:
    """The installed trained checkpoint of ``config_path``; the error names how to produce it."""
    get_config_file(config_path)
    path = checkpoint_path(config_path)
    if not path.is_file():
        raise CheckpointNotInstalledError(
            f"no trained checkpoint for {config_path}: expected {path}. Produce it with\n"
            f"  python tools/train_model_zoo.py --config {config_path}\n"
            f"or install an existing run with\n"
            f"  python tools/train_model_zoo.py --config {config_path} --from-output <OUTPUT_DIR>\n"
            f"(the model zoo directory is $PANOPTIC_ZOO_MODEL_ZOO, default "
            f"~/.cache/panoptic_zoo/model_zoo)"
        )
    return str(path)


def get_config(config_path: str, trained: bool = False) -> CfgNode:
    """The config of ``config_path``; with ``trained``, MODEL.WEIGHTS is its trained checkpoint."""
    cfg = get_cfg()
    cfg.merge_from_file(get_config_file(config_path))
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_path(config_path)
    return cfg


def get(config_path: str, trained: bool = True, device: str = "cpu") -> torch.nn.Module:
    """
    The model of ``config_path`` in eval mode on ``device``: with the trained checkpoint
    (``trained``), else initialized as for training (``MODEL.WEIGHTS`` of the config, e.g.
    ImageNet weights, or none).
    """
    cfg = get_config(config_path, trained=trained)
    cfg.MODEL.DEVICE = device
    model = build_model(cfg)
    # A trained checkpoint must be this very model; initial weights (ImageNet) fill only a part.
    build_checkpointer(cfg, model, exact_fit=trained).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    return model.eval()
