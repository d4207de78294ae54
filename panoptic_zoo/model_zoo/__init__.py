"""
The model zoo: configs and trained checkpoints by config path (:mod:`.model_zoo`), the
MODEL_ZOO.md table (:mod:`.table`), converters from the official releases
(:mod:`.converters`), and the official Panoptic FCN run from a local copy of its repository
with a project checkpoint's weights (:mod:`.official_panoptic_fcn`, for parity checks and the
benchmark's reference). See docs/MODEL_ZOO.md.
"""

from .model_zoo import (
    CONFIG_ROOT,
    CheckpointNotInstalledError,
    checkpoint_path,
    get,
    get_checkpoint_path,
    get_config,
    get_config_file,
    model_zoo_root,
)

__all__ = [
    "CONFIG_ROOT",
    "CheckpointNotInstalledError",
    "checkpoint_path",
    "get",
    "get_checkpoint_path",
    "get_config",
    "get_config_file",
    "model_zoo_root",
]
