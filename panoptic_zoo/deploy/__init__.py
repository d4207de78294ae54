"""Deployment: a method's network exported (TorchScript, ONNX), its post-processing eager, one
runtime wrapper with the eager model's output contract (docs/DEPLOYMENT.md)."""

from .export import FORMATS, eager_part_path, export_network
from .network import NETWORK_HEADS, DeployNetwork, serve_network_outputs
from .runtime import BACKENDS, DeployedModel, load

__all__ = [
    "BACKENDS",
    "FORMATS",
    "NETWORK_HEADS",
    "DeployNetwork",
    "DeployedModel",
    "eager_part_path",
    "export_network",
    "load",
    "serve_network_outputs",
]
