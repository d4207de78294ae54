from .build import build_evaluators
from .panoptic_evaluator import PanopticEvaluator
from .pq import PanopticStats

__all__ = ["PanopticEvaluator", "PanopticStats", "build_evaluators"]
