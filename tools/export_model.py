#!/usr/bin/env python
"""
Export any panoptic_zoo model's network to TorchScript or ONNX, then check the export end to
end: the panoptic output of the exported network, post-processed by the eager model's own code,
against the eager model's, on each check image (docs/DEPLOYMENT.md).

    python tools/export_model.py --config-file configs/coco/upsnet_R_50_1x.yaml \\
        --format onnx --output output/export/upsnet.onnx [--dynamic] \\
        [--check-images a.jpg b.png] [--opts MODEL.WEIGHTS model_final.pth]

Writes the export and its eager rest (``<output>.eager.pth``); ``panoptic_zoo.deploy.load``
reads both. Without ``--dynamic`` the export takes the first check image's padded size only,
and every check image is resized to it; with ``--dynamic`` the check images are checked one
by one and then all in one batch. Without ``--check-images``, two images of random pixels
(odd sizes) are checked. An ONNX export with deformable convolutions is checked twice: as
``load`` runs it here (the C kernel between ONNX Runtime sessions) and as any runtime runs it
(ONNX Runtime's DeformConv).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from detectron2.data import transforms as T

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data.mappers import read_image_checked
from panoptic_zoo.deploy import FORMATS, export_network, load
from panoptic_zoo.deploy.check import check_deployed
from panoptic_zoo.deploy.export import export_config, network_input
from panoptic_zoo.engine import build_inference_model

# The random check images when none are given: odd sizes, one portrait, one landscape.
RANDOM_IMAGE_SIZES = ((91, 67), (75, 101))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--output", required=True, help="the export (e.g. model.onnx, model.ts)")
    parser.add_argument(
        "--dynamic", action="store_true", help="any batch size and image size (else fixed)"
    )
    parser.add_argument("--check-images", nargs="+", default=[], help="image files to check on")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    return parser.parse_args(argv)


def check_inputs(cfg, paths: list[str], same_size: bool) -> list[dict]:
    """Model inputs of the check images, resized as the demo and the evaluation do; with
    ``same_size`` all to the first one's size."""
    if paths:
        images = [read_image_checked(p, format=cfg.INPUT.FORMAT) for p in paths]
    else:
        generator = np.random.default_rng(0)
        images = [generator.integers(0, 256, (*size, 3), dtype=np.uint8)
                  for size in RANDOM_IMAGE_SIZES]  # fmt: skip
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    inputs = []
    for image in images:
        height, width = image.shape[:2]
        resized = resize.get_transform(image).apply_image(image)
        if same_size and inputs:
            resized = T.ResizeTransform(
                *resized.shape[:2], *inputs[0]["image"].shape[1:]
            ).apply_image(resized)
        tensor = torch.as_tensor(
            np.ascontiguousarray(resized.transpose(2, 0, 1)), dtype=torch.float32
        )
        inputs.append({"image": tensor, "height": height, "width": width})
    return inputs


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg = export_config(cfg, args.format)
    model = build_inference_model(cfg, cfg.MODEL.WEIGHTS)
    inputs = check_inputs(cfg, args.check_images, same_size=not args.dynamic)
    example = network_input(model, inputs[:1])
    output = export_network(model, cfg, example, args.output, args.format, args.dynamic)
    deployed = [load(output)]
    if deployed[0].deformable == "C kernel":  # also as other runtimes run it: DeformConv
        deployed.append(load(output, deformable_kernel=False))
    reports = []
    try:
        for runtime in deployed:
            checked = check_deployed(model, runtime, inputs)
            if args.dynamic and len(inputs) > 1:  # and all check images as one batch
                checked += check_deployed(model, runtime, inputs, batch_size=len(inputs))
            reports += [(runtime, report) for report in checked]
    except (AssertionError, ValueError) as e:
        print(f"error: the check of {output} against the eager model failed: {e}", file=sys.stderr)
        return 1
    for runtime, report in reports:
        deformable = runtime.deformable and f", deformable convolutions on {runtime.deformable}"
        print(
            f"image {report['size'][0]}x{report['size'][1]} (batch of {report['batch']}, "
            f"{runtime.backend}{deformable or ''}): {report['pixel_agreement']:.2%} of pixels and all "
            f"{report['segments']} segments as the eager model"
        )
    print(
        f"exported {type(model).__name__}'s network to {output} "
        f"({Path(output).stat().st_size / 2**20:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
