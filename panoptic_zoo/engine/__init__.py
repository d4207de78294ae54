from .defaults import setup_cfg
from .inference import build_inference_model, without_inference_changes
from .trainer import Trainer

__all__ = ["Trainer", "build_inference_model", "setup_cfg", "without_inference_changes"]
