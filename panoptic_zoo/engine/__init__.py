from .defaults import setup_cfg
from .trainer import Trainer

__all__ = ["Trainer", "setup_cfg"]
