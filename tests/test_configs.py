"""
Every shipped config parses with get_cfg(), names registered datasets, and builds its model,
optimizer and learning-rate schedule.
"""

from __future__ import annotations

import importlib.util

import pytest
import yaml
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from panoptic_testing import CONFIGS, REPO

from panoptic_zoo.acceleration import add_acceleration_config
from panoptic_zoo.config import (
    CLASS_COUNT_KEYS,
    add_panoptic_zoo_config,
    check_class_counts,
    get_cfg,
)
from panoptic_zoo.data.datasets.custom import register_from_config
from panoptic_zoo.data import DATASET_MAPPER_REGISTRY
from panoptic_zoo.engine import Trainer

# Comparison sets (tools/compare_methods.py) list configs; they are not configs themselves.
ALL_CONFIGS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith(("Base-", "comparison"))
)

spec = importlib.util.spec_from_file_location(
    "make_photo_dataset", REPO / "tools" / "make_photo_dataset.py"
)
make_photo_dataset = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_photo_dataset)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_builds(path, tmp_path, monkeypatch):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    if cfg.DATASETS.REGISTER:
        # The photos of docs/DATASETS.md, where the config expects them, at a quarter size.
        make_photo_dataset.write_photo_dataset(tmp_path / "datasets" / "photos", scale=0.25)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("PANOPTIC_ZOO_DATASETS", str(tmp_path / "cache"))
        register_from_config(cfg)
    check_class_counts(cfg)  # the model's class counts are the dataset's
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        assert name in DatasetCatalog.list(), f"{path}: dataset {name} is not registered"
    assert cfg.INPUT.DATASET_MAPPER_NAME in DATASET_MAPPER_REGISTRY
    assert not cfg.MODEL.WEIGHTS.startswith(("http", "detectron2://")), "no downloads at run time"
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(p.device == torch.device("cpu") for p in model.parameters())
    optimizer = Trainer.build_optimizer(cfg, model)
    Trainer.build_lr_scheduler(cfg, optimizer)


def test_add_config_is_idempotent_and_keeps_user_values():
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "COCOPanopticDatasetMapper"
    cfg.ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME = False
    before = cfg.dump()
    add_panoptic_zoo_config(cfg)
    add_panoptic_zoo_config(cfg)
    add_acceleration_config(cfg)
    assert cfg.dump() == before


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_no_config_file_names_a_model_class_count(path):
    """Class counts are the dataset's (DATASETS.NUM_*_CLASSES or its metadata), never a model key's."""
    content = yaml.safe_load(path.read_text())
    for key in CLASS_COUNT_KEYS:
        node = content
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        assert node is None, f"{path.relative_to(CONFIGS)} sets {key}"


def test_keys_an_older_version_wrote_are_read_at_their_new_place():
    """A run's config.yaml from before ACCELERATION.CPU (its options under TEST) still loads."""
    old_run = CfgNode({"TEST": {"CHANNELS_LAST_BACKBONE": False, "FOLD_BATCH_NORMS": False}})
    cfg = get_cfg()
    cfg.merge_from_other_cfg(old_run)
    # The depthwise C kernel's option (under TEST, then ACCELERATION.CPU): now ONNX Runtime's.
    cfg.merge_from_list(["TEST.DEPTHWISE_KERNEL", False])
    cpu = cfg.ACCELERATION.CPU
    assert (cpu.CHANNELS_LAST_BACKBONE, cpu.FOLD_BATCH_NORMS, cpu.DEPTHWISE_ONNXRUNTIME) == (
        (False,) * 3
    )
    assert "CHANNELS_LAST_BACKBONE" not in cfg.TEST and old_run.TEST.CHANNELS_LAST_BACKBONE is False
    assert "DEPTHWISE_KERNEL" not in cfg.TEST and "DEPTHWISE_KERNEL" not in cpu
    cfg.merge_from_other_cfg(CfgNode({"ACCELERATION": {"CPU": {"DEPTHWISE_KERNEL": True}}}))
    assert cfg.ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME is True
    cfg.merge_from_list(["ACCELERATION.CPU.DEPTHWISE_KERNEL", False])
    assert cfg.ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME is False
    # A version that wrote both options: the current one's value is kept.
    both = {"DEPTHWISE_KERNEL": False, "DEPTHWISE_ONNXRUNTIME": True}
    cfg.merge_from_other_cfg(CfgNode({"ACCELERATION": {"CPU": both}}))
    assert cfg.ACCELERATION.CPU.DEPTHWISE_ONNXRUNTIME is True
    assert "DEPTHWISE_KERNEL" not in cfg.ACCELERATION.CPU
