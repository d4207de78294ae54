#!/usr/bin/env python
"""
Export the network part of Panoptic FPN with ``torch.export`` (CPU) and check that the exported
program computes what the eager model does.

The exported graph takes a normalized, padded image batch (N, 3, H, W), H and W multiples of 32,
and returns the semantic logits (stride 4), then the RPN objectness logits and box deltas of
each level: every convolution of the model. What stays in Python, as in detectron2's own
export, is the data-dependent part: proposal selection (top-k + NMS), the ROI heads on a
variable number of boxes, and the panoptic combination (docs/MODEL_ZOO.md, "Export").

    python tools/export_model.py --config-file configs/shapes/panoptic_fpn_R_18.yaml \\
        --output output/export/panoptic_fpn_R_18.pt2 [--fixed-size] [--opts MODEL.WEIGHTS model_final.pth]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from detectron2.modeling import build_model
from torch import nn

import panoptic_zoo  # noqa: F401  (registers models)
from panoptic_zoo.checkpoint import build_checkpointer
from panoptic_zoo.config import get_cfg

__all__ = ["PanopticFPNNetwork", "export_panoptic_fpn_network"]

STRIDE = 32


class PanopticFPNNetwork(nn.Module):
    """The convolutional part of detectron2's PanopticFPN: backbone, semantic head, RPN head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if type(model).__name__ != "PanopticFPN":
            raise ValueError(f"only Panoptic FPN is exported, got {type(model).__name__}")
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.rpn_head = model.proposal_generator.rpn_head
        self.rpn_features = list(model.proposal_generator.in_features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        semantic_logits = self.sem_seg_head.layers(features)
        objectness, deltas = self.rpn_head([features[f] for f in self.rpn_features])
        return (semantic_logits, *objectness, *deltas)


def export_panoptic_fpn_network(model: nn.Module, example: torch.Tensor, fixed_size: bool = False):
    """
    ``torch.export`` of :class:`PanopticFPNNetwork`: batch, height and width dynamic (height and
    width multiples of 32), or all fixed to ``example``'s shape (10x faster to export).
    """
    network = PanopticFPNNetwork(model).eval()
    dynamic = None
    if not fixed_size:
        height = torch.export.Dim("height_in_strides", min=1, max=256)
        width = torch.export.Dim("width_in_strides", min=1, max=256)
        batch = torch.export.Dim("batch", min=1, max=64)
        dynamic = {"images": {0: batch, 2: STRIDE * height, 3: STRIDE * width}}
    with torch.no_grad():
        return network, torch.export.export(network, (example,), dynamic_shapes=dynamic)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="the exported program (.pt2)")
    parser.add_argument(
        "--fixed-size",
        action="store_true",
        help="export for batch 2 at 128x160 only (no dynamic shapes)",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list([*args.opts, "MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    build_checkpointer(cfg, model, exact_fit=True).load(cfg.MODEL.WEIGHTS)

    generator = torch.Generator().manual_seed(0)
    # Batch 2: torch.export specializes a dimension of size 1 to a constant.
    example = torch.randn(2, 3, 4 * STRIDE, 5 * STRIDE, generator=generator)
    network, exported = export_panoptic_fpn_network(model, example, args.fixed_size)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(exported, str(output))

    # Check the saved program, also on shapes other than the example's when they are dynamic.
    reloaded = torch.export.load(str(output)).module()
    shapes = [tuple(example.shape)]
    if not args.fixed_size:
        shapes += [(1, 3, 4 * STRIDE, 5 * STRIDE), (2, 3, 3 * STRIDE, 7 * STRIDE)]
    for shape in shapes:
        images = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected, got = network(images), reloaded(images)
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    print(
        f"exported {len(expected)} outputs to {output}; equal to the eager model on inputs {shapes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
