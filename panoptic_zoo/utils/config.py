"""Helpers for the methods' ``add_*_config`` functions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectron2.config import CfgNode

__all__ = ["add_missing_options"]


def add_missing_options(node: CfgNode, defaults: Mapping[str, Any]) -> None:
    """
    Add ``defaults`` (nested mappings become sub-nodes) to ``node`` without overwriting any
    existing key, so an ``add_*_config`` is safe to call twice and never resets a value a user,
    a YAML file or another method has set.
    """
    for key, value in defaults.items():
        if isinstance(value, Mapping):
            if key not in node:
                node[key] = CfgNode()
            add_missing_options(node[key], value)
        elif key not in node:
            node[key] = value
