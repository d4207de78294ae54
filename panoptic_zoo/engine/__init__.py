from .defaults import setup_cfg
from .inference import build_inference_model, inference_copy, without_acceleration
from .trainer import Trainer

__all__ = [
    "Trainer",
    "build_inference_model",
    "inference_copy",
    "setup_cfg",
    "without_acceleration",
]
