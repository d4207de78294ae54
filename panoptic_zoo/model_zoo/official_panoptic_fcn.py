"""
The official Panoptic FCN (dvlab-research / Jia-Research-Lab ``PanopticFCN``, a detectron2
project) run from a local copy of its repository, for the comparisons that need its own outputs:
the parity tools (tools/parity/panoptic_fcn*.py) and the benchmark's reference. Nothing of it is
part of this project: the package is imported from the directory given.

* :func:`import_official`: the ``panopticfcn`` package (its meta-architecture is registered under
  the same name as this project's, so this project's entry is put back after the import);
* :func:`official_config`: the official config of the model a project config builds;
* :func:`official_state_dict`: this project's weights in the official key names, found through the
  converter (every official key is converted and the result must give back the weights exactly).

The official deformable layers (``detectron2.layers.deform_conv.ModulatedDeformConv``) run on this
project's detectron2 build, which routes them to ``torchvision.ops.deform_conv2d`` (the same
operation as detectron2's compiled kernel).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
from detectron2.config import CfgNode
from detectron2.modeling import META_ARCH_REGISTRY

from .converters import ConversionError, convert_official_panoptic_fcn

__all__ = [
    "build_official_model",
    "import_official",
    "official_commit",
    "official_config",
    "official_state_dict",
]


def import_official(official_src: str | Path) -> ModuleType:
    """The official ``panopticfcn`` package from the repository at ``official_src``."""
    src = Path(official_src).resolve()
    if not (src / "panopticfcn" / "panoptic_seg.py").is_file():
        raise FileNotFoundError(
            f"{src} is not a copy of the official PanopticFCN repository (no "
            "panopticfcn/panoptic_seg.py); give the repository's root"
        )
    if "panopticfcn" in sys.modules:
        return sys.modules["panopticfcn"]
    ours = META_ARCH_REGISTRY._obj_map.pop("PanopticFCN", None)
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("panopticfcn")
    finally:
        sys.path.remove(str(src))
        if ours is not None:
            META_ARCH_REGISTRY._obj_map["PanopticFCN"] = ours


def official_commit(official_src: str | Path) -> str:
    """The commit the local copy is at (``unknown`` outside a git checkout)."""
    result = subprocess.run(
        ["git", "-C", str(official_src), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def official_config(official: ModuleType, cfg: CfgNode) -> CfgNode:
    """
    The official config of the model ``cfg`` (this project's) builds, with its inference
    settings. The official inference hard-codes the heatmap pool sizes (3, 3, 3, 5, 5) and the
    0.05 minimum rescored score (a config that sets these otherwise has no official
    counterpart), and caps the instances at POSITION_HEAD.THING.TOP_NUM, twice the per-level
    top-k (100 for 50), where this project caps them at TEST.DETECTIONS_PER_IMAGE: where the two
    differ, so can the instances beyond the smaller cap.
    """
    from detectron2.config import get_cfg as detectron2_cfg

    fcn = cfg.MODEL.PANOPTIC_FCN
    departures = []
    if list(fcn.INFERENCE.HEATMAP_POOL_SIZES) != [3, 3, 3, 5, 5]:
        departures.append(f"INFERENCE.HEATMAP_POOL_SIZES {list(fcn.INFERENCE.HEATMAP_POOL_SIZES)}")
    if fcn.INFERENCE.MIN_SCORE != 0.05:
        departures.append(f"INFERENCE.MIN_SCORE {fcn.INFERENCE.MIN_SCORE}")
    if departures:
        raise ValueError(f"the official Panoptic FCN has no setting for {', '.join(departures)}")

    official_cfg = detectron2_cfg()
    official.add_panopticfcn_config(official_cfg)
    model = official_cfg.MODEL
    model.META_ARCHITECTURE = "PanopticFCN"
    model.DEVICE = cfg.MODEL.DEVICE
    model.PIXEL_MEAN = list(cfg.MODEL.PIXEL_MEAN)
    model.PIXEL_STD = list(cfg.MODEL.PIXEL_STD)
    model.RESNETS = cfg.MODEL.RESNETS.clone()
    model.FPN = cfg.MODEL.FPN.clone()
    model.SEMANTIC_FPN.IN_FEATURES = list(fcn.FEATURE_ENCODER.IN_FEATURES)
    model.SEMANTIC_FPN.CONVS_DIM = fcn.FEATURE_ENCODER.FPN_DIM
    model.SEMANTIC_FPN.NORM = fcn.FEATURE_ENCODER.FPN_NORM
    position = model.POSITION_HEAD
    position.NUM_CONVS = fcn.POSITION_HEAD.NUM_CONVS
    position.CONVS_DIM = fcn.POSITION_HEAD.CONVS_DIM
    position.NORM = fcn.POSITION_HEAD.NORM
    position.DEFORM = fcn.POSITION_HEAD.DEFORM
    position.THING.NUM_CLASSES = fcn.NUM_THING_CLASSES
    position.THING.THRES = fcn.INFERENCE.THING_SCORE_THRESH
    position.THING.TOP_NUM = 2 * fcn.INFERENCE.THING_TOP_K
    position.STUFF.NUM_CLASSES = fcn.NUM_STUFF_CLASSES + 1  # with the "any thing" class 0
    position.STUFF.THRES = fcn.INFERENCE.STUFF_SCORE_THRESH
    model.SEM_SEG_HEAD.NUM_CLASSES = fcn.NUM_STUFF_CLASSES + 1
    model.KERNEL_HEAD.NUM_CONVS = fcn.KERNEL_HEAD.NUM_CONVS
    model.KERNEL_HEAD.CONVS_DIM = fcn.KERNEL_HEAD.CONVS_DIM
    model.KERNEL_HEAD.NORM = fcn.KERNEL_HEAD.NORM
    # The official FEATURE_ENCODER.IN_FEATURES lists the kernel generator's levels.
    model.FEATURE_ENCODER.IN_FEATURES = list(fcn.KERNEL_GENERATOR.IN_FEATURES)
    model.FEATURE_ENCODER.NUM_CONVS = fcn.FEATURE_ENCODER.NUM_CONVS
    model.FEATURE_ENCODER.CONVS_DIM = fcn.FEATURE_ENCODER.CONVS_DIM
    model.FEATURE_ENCODER.NORM = fcn.FEATURE_ENCODER.NORM
    model.FEATURE_ENCODER.DEFORM = fcn.FEATURE_ENCODER.DEFORM
    model.INFERENCE.INST_THRES = fcn.INFERENCE.MASK_THRESH
    model.INFERENCE.SIMILAR_THRES = fcn.INFERENCE.KERNEL_FUSION_THRESH
    model.INFERENCE.COMBINE.OVERLAP_THRESH = fcn.INFERENCE.OVERLAP_THRESH
    model.INFERENCE.COMBINE.STUFF_AREA_LIMIT = fcn.INFERENCE.STUFF_AREA_LIMIT
    model.INFERENCE.COMBINE.INST_THRESH = fcn.INFERENCE.INSTANCE_SCORE_THRESH
    return official_cfg


def official_state_dict(
    official_keys: list[str], cfg: CfgNode, state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state_dict`` (this project's model built from ``cfg``) under ``official_keys`` (the
    official model's): each official key takes the tensor of the key the converter gives it,
    and converting the result must give ``state_dict`` back exactly."""
    encoder_features = tuple(cfg.MODEL.PANOPTIC_FCN.FEATURE_ENCODER.IN_FEATURES)
    # Each tensor's position as its value: the converter renames, so the positions say where
    # every official key goes.
    positions = {k: torch.tensor(i) for i, k in enumerate(official_keys)}
    renamed = convert_official_panoptic_fcn(positions, encoder_features).state_dict
    official = {official_keys[int(v)]: state_dict[k] for k, v in renamed.items()}
    back = convert_official_panoptic_fcn(official, encoder_features).state_dict
    if back.keys() != state_dict.keys() or any(
        not torch.equal(back[k], state_dict[k]) for k in state_dict
    ):
        raise ConversionError("the converter does not give this model's weights back exactly")
    return official


def build_official_model(official_src: str | Path, cfg: CfgNode, model: torch.nn.Module):
    """The official model of ``cfg`` with ``model``'s weights, in eval mode on its device."""
    official = import_official(official_src)
    official_model = official.PanopticFCN(official_config(official, cfg))
    weights = official_state_dict(list(official_model.state_dict()), cfg, model.state_dict())
    official_model.load_state_dict(weights)
    return official_model.to(model.device).eval()
