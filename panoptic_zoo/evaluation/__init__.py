from .build import build_evaluators

__all__ = ["build_evaluators"]
