"""The global-pooling branch UPSNet's official COCO model adds to the top of its FPN."""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d
from detectron2.modeling.backbone import FPN
from torch import nn

__all__ = ["GlobalPoolingLateral", "add_fpn_global_pooling"]


class GlobalPoolingLateral(Conv2d):
    """
    The FPN's top lateral 1x1 convolution plus a fully connected projection of its input's
    global average, broadcast over the map: image-wide context for every top-down level.
    The convolution keeps its parameter names, so checkpoints without the branch still load
    into the convolution.
    """

    def __init__(self, lateral: Conv2d):
        super().__init__(
            lateral.in_channels, lateral.out_channels, 1,
            bias=lateral.bias is not None, norm=lateral.norm,
        )  # fmt: skip
        self.load_state_dict(lateral.state_dict())
        self.global_pooling = nn.Linear(lateral.in_channels, lateral.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.global_pooling(x.mean(dim=(2, 3)))[:, :, None, None]


def add_fpn_global_pooling(fpn: nn.Module) -> None:
    """Replace the top lateral convolution of detectron2's ``fpn`` by a :class:`GlobalPoolingLateral`."""
    if not isinstance(fpn, FPN):
        raise ValueError(
            "MODEL.UPSNET.FPN_GLOBAL_POOLING needs a detectron2 FPN backbone (e.g. "
            f"build_resnet_fpn_backbone); got {type(fpn).__name__}"
        )
    top = fpn.lateral_convs[0]
    name = next(n for n, m in fpn.named_children() if m is top)
    fpn.lateral_convs[0] = GlobalPoolingLateral(top)
    setattr(fpn, name, fpn.lateral_convs[0])
