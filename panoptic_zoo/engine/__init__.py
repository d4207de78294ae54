from .defaults import setup_cfg
from .inference import apply_inference_changes, build_inference_model, without_inference_changes
from .trainer import Trainer

__all__ = [
    "Trainer",
    "apply_inference_changes",
    "build_inference_model",
    "setup_cfg",
    "without_inference_changes",
]
