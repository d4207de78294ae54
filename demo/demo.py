#!/usr/bin/env python
"""
Panoptic predictions of any panoptic_zoo model on your own images or videos, drawn with
detectron2's Visualizer (things and stuff labelled, over the image).

    python demo/demo.py --config-file configs/shapes/panoptic_fpn_R_18.yaml \\
        --input photo.jpg more/*.png           # image files
        --input my_folder/                     # every image in a folder
        --input clip.mp4                       # a video: each frame, written as <output>/clip.mp4
        --output out/ --opts MODEL.WEIGHTS output/shapes/panoptic_fpn_R_18/model_final.pth
        [--backend onnxruntime --export output/export/panoptic_fpn_R_18.onnx]

Images are written as ``<output>/<name>.png``. Runs on the CPU when CUDA is not available.
Segments are labelled with the classes of the config's first DATASETS.TEST dataset (your own:
``--dataset NAME IMAGE_ROOT PANOPTIC_JSON PANOPTIC_ROOT`` and ``DATASETS.TEST "('NAME',)"``),
checked against the model's class counts before the model is loaded. An unreadable image in
the inputs is reported at the end; the others are still drawn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from tqdm import tqdm

from panoptic_zoo.config import check_class_counts, get_cfg
from panoptic_zoo.data.datasets.custom import (
    add_dataset_argument,
    register_from_config,
    set_dataset_arguments,
)
from panoptic_zoo.data.mappers import read_image_checked
from panoptic_zoo.deploy import BACKENDS, load
from panoptic_zoo.engine import build_inference_model
from panoptic_zoo.acceleration import restart_with_heap_tunables, reuse_freed_heap_memory
from panoptic_zoo.utils.visualization import draw_panoptic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


class DemoInputError(ValueError):
    """An input that is missing, unreadable or of an unknown kind."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="images, a folder, or videos")
    parser.add_argument("--output", required=True, help="directory for the drawn predictions")
    add_dataset_argument(parser)
    parser.add_argument(
        "--backend", choices=["eager", *BACKENDS], default="eager",
        help="eager PyTorch, or an export of tools/export_model.py (--export) run by TorchScript "
        "or ONNX Runtime, post-processed by the same eager code",
    )  # fmt: skip
    parser.add_argument("--export", help="the exported network (.onnx, .ts) for --backend")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    args = parser.parse_args(argv)
    if (args.backend == "eager") != (args.export is None):
        parser.error("--export names the exported network of --backend torchscript|onnxruntime")
    return args


def setup_cfg(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    set_dataset_arguments(cfg, args.dataset)
    register_from_config(cfg)
    if not cfg.DATASETS.TEST:
        raise DemoInputError(
            "DATASETS.TEST is empty: the demo labels segments with the classes of its first "
            "dataset; name one (e.g. --opts DATASETS.TEST \"('my_val',)\")"
        )
    # The classes drawn are the dataset's: they must be the ones the model was built for.
    cfg.DATASETS.TRAIN = ()
    check_class_counts(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """(images, videos) named by ``inputs``: files, or folders whose images are taken in order."""
    images, videos = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DemoInputError(
                    f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            images += found
        elif not path.is_file():
            raise DemoInputError(f"input {path} does not exist")
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            raise DemoInputError(f"input {path}: unknown kind (not an image or a video file)")
    return images, videos


class PanopticDrawer:
    """The model of a config, run on BGR images and drawn on them (detectron2's DefaultPredictor
    steps, with this project's weights-only, exact-fit checkpoint loading)."""

    def __init__(self, cfg, backend: str = "eager", export: str | None = None):
        if backend == "eager":
            self.model = build_inference_model(cfg, cfg.MODEL.WEIGHTS)
        else:
            self.model = load(export, backend)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """The drawn prediction of one BGR image, as BGR."""
        height, width = image_bgr.shape[:2]
        image = image_bgr if self.input_format == "BGR" else image_bgr[:, :, ::-1]
        image = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        prediction = self.model([{"image": tensor, "height": height, "width": width}])[0]
        segment_ids, segments_info = prediction["panoptic_seg"]
        drawn = draw_panoptic(
            image_bgr[:, :, ::-1], segment_ids.cpu(), segments_info, self.metadata, scale=1.0
        )
        return np.ascontiguousarray(drawn[:, :, ::-1])


def video_frames(path: Path) -> tuple[Iterator[np.ndarray], int, float, tuple[int, int]]:
    """Frames (BGR), frame count, frames per second and (width, height) of a video file."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DemoInputError(f"video {path} cannot be opened (unsupported codec or not a video)")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def frames():
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return frames(), count, fps, size


def run_video(drawer: PanopticDrawer, path: Path, output: Path) -> Path:
    frames, count, fps, size = video_frames(path)
    target = output / f"{path.stem}.mp4"
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise DemoInputError(f"cannot write video {target}")
    written = 0
    try:
        for frame in tqdm(frames, total=count or None, desc=path.name, unit="frame"):
            writer.write(drawer(frame))
            written += 1
    finally:
        writer.release()
    if written == 0:
        raise DemoInputError(f"video {path} has no readable frames")
    return target


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        images, videos = expand_inputs(args.input)
    except DemoInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        cfg = setup_cfg(args)
    except (DemoInputError, KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.MODEL.DEVICE == "cpu":
        reuse_freed_heap_memory()  # freed tensor memory kept for reuse by this process
    print(f"labelling segments with the classes of dataset {cfg.DATASETS.TEST[0]}")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    drawer = PanopticDrawer(cfg, args.backend, args.export)
    unreadable = []
    for path in tqdm(images, desc="images", unit="img"):
        try:
            image = read_image_checked(str(path), format="BGR")
        except (OSError, ValueError) as e:
            unreadable.append(f"{path}: {e}")
            continue
        cv2.imwrite(str(output / f"{path.stem}.png"), drawer(image))
    try:
        for path in videos:
            run_video(drawer, path, output)
    except (DemoInputError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(images) - len(unreadable)} images and {len(videos)} videos to {output}")
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable image(s):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in unreadable), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    restart_with_heap_tunables()  # glibc's thread cache off, for reuse_freed_heap_memory
    sys.exit(main())
