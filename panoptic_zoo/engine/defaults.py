"""Turning command-line arguments into a ready config, the same way for every entry point."""

from __future__ import annotations

import logging
import os

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.utils import comm

from ..config import check_class_counts, get_cfg
from ..data.datasets.custom import register_from_config, set_dataset_arguments

__all__ = ["setup_cfg"]

logger = logging.getLogger(__name__)


def setup_cfg(args) -> CfgNode:
    """
    Config from ``args.config_file``, ``args.opts`` and ``args.dataset`` (``--dataset``
    entries, added to DATASETS.REGISTER), frozen, after detectron2's ``default_setup``
    (logging, seed, config dump in OUTPUT_DIR). The datasets of DATASETS.REGISTER are
    registered, and the class counts of the config checked against the datasets' metadata.

    Without CUDA, a ``cuda`` device falls back to ``cpu``, and CPU worker processes split the
    cores between them instead of each using all of them.
    """
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    set_dataset_arguments(cfg, getattr(args, "dataset", None) or [])
    register_from_config(cfg)
    check_class_counts(cfg)
    cpu_fallback = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if cpu_fallback:
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    if cpu_fallback:
        logger.warning("CUDA is not available: running on the CPU (MODEL.DEVICE=cpu).")
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    return cfg
