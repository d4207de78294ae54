#!/usr/bin/env python
"""
Convert an official release checkpoint to this project's format and check it against the model
a config builds (every tensor filled, shapes equal); writes a weights-only ``.pth``.

    python tools/convert_checkpoint.py detectron2-panoptic-fpn --input model_final_dbfeb4.pkl \\
        --config configs/coco/panoptic_fpn_R_50_3x.yaml --output panoptic_fpn_R_50_3x.pth
    python tools/convert_checkpoint.py detectron2-panoptic-deeplab --input model_final_bd324a.pkl \\
        --config configs/cityscapes/panoptic_deeplab_R_52_DC5_dsconv_90k.yaml \\
        --source-dataset cityscapes_fine_panoptic_train --output pdl.pth
    python tools/convert_checkpoint.py panoptic-fcn --input panoptic_fcn_r50_1x.pth \\
        --config configs/coco/panoptic_fcn_R_50_1x.yaml --output pfcn.pth
    python tools/convert_checkpoint.py upsnet --input upsnet_resnet_50_coco_90000.pth \\
        --config configs/coco/upsnet_R_50_1x.yaml --output upsnet.pth
    python tools/convert_checkpoint.py mask2former --input model_final_94dc52.pkl \\
        --config configs/coco/mask2former_R_50.yaml --output mask2former.pth

The official Mask2Former weights are licensed CC BY-NC 4.0 (non-commercial); the converter warns.

Conversions that are not exact (see docs/MODEL_ZOO.md, "Converting official checkpoints") are
refused unless ``--allow-inexact`` is given. ``--opts KEY VALUE ...`` (last) overrides the config.
"""

from __future__ import annotations

import argparse
import sys

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from panoptic_zoo.config import get_cfg
from panoptic_zoo.model_zoo.converters import (
    ConversionError,
    convert_detectron2_panoptic_deeplab,
    convert_detectron2_panoptic_fpn,
    convert_official_mask2former,
    convert_official_panoptic_fcn,
    convert_official_upsnet,
    load_release_file,
    mask2former_input_notes,
    official_input_notes,
    save_converted,
    unified_class_order,
    verify_against_model,
)

FORMATS = (
    "detectron2-panoptic-fpn", "detectron2-panoptic-deeplab", "panoptic-fcn", "upsnet",
    "mask2former",
)  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=FORMATS, help="the release the input comes from")
    parser.add_argument("--input", required=True, help="official .pkl/.pth file")
    parser.add_argument("--output", required=True, help="converted .pth to write")
    parser.add_argument("--config", required=True, help="this project's config the weights are for")
    parser.add_argument(
        "--source-dataset",
        help="detectron2-panoptic-deeplab (required), mask2former (when its classes are not "
        "things then stuff, e.g. Cityscapes): the detectron2 dataset (standard ids) the model was "
        "trained on, e.g. cityscapes_fine_panoptic_train",
    )
    parser.add_argument("--allow-inexact", action="store_true", help="write even if not exact")
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ..."
    )
    return parser.parse_args(argv)


def convert(args, cfg):
    weights = load_release_file(args.input)
    if args.format == "detectron2-panoptic-fpn":
        return convert_detectron2_panoptic_fpn(weights)
    if args.format == "detectron2-panoptic-deeplab":
        if not args.source_dataset:
            raise ConversionError("detectron2-panoptic-deeplab needs --source-dataset")
        order = unified_class_order(
            MetadataCatalog.get(args.source_dataset), MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        )
        return convert_detectron2_panoptic_deeplab(weights, order)
    if args.format == "panoptic-fcn":
        conversion = convert_official_panoptic_fcn(
            weights, tuple(cfg.MODEL.PANOPTIC_FCN.FEATURE_ENCODER.IN_FEATURES)
        )
        conversion.notes += official_input_notes(
            cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT
        )
        return conversion
    if args.format == "mask2former":
        order = None
        if args.source_dataset:
            order = unified_class_order(
                MetadataCatalog.get(args.source_dataset),
                MetadataCatalog.get(cfg.DATASETS.TRAIN[0]),
            )
        conversion = convert_official_mask2former(weights, order)
        conversion.notes += mask2former_input_notes(
            cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT
        )
        return conversion
    return convert_official_upsnet(weights)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    try:
        conversion = convert(args, cfg)
        verify_against_model(conversion, build_model(cfg))
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(conversion.summary())
    if conversion.notes and not args.allow_inexact:
        print("error: the conversion is not exact (above); --allow-inexact writes it anyway",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"wrote {save_converted(args.output, conversion, f'{args.format} {args.input}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
