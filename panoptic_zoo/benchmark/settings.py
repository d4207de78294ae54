"""
What one benchmark run measures: its settings, and what they make of each config (the config
node, the benchmark image, the model as ``train_net.py --eval-only`` runs it). Shared by the run
(:mod:`.run`) and the reference's fresh process (:mod:`.reference_process`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from PIL import Image
from torch import nn

from ..config import check_class_counts, get_cfg
from ..data.datasets.custom import register_from_config, set_dataset_arguments
from ..deploy.runtime import BACKENDS
from ..engine import build_inference_model
from ..utils.config import shrink_to_test_size
from .floor import FULL_FLOOR, TINY_FLOOR, FloorProblem

__all__ = [
    "BENCHMARK_BACKENDS",
    "ONNXRUNTIME_DEFORMCONV",
    "PRECISIONS",
    "BenchmarkSettings",
    "benchmark_inputs",
    "build_model",
    "image_source",
    "load_config",
]

# ONNX Runtime running the export's deformable convolutions with its own DeformConv, not the C
# kernel (panoptic_zoo.deploy.load's deformable_kernel=False): both timed in one run.
ONNXRUNTIME_DEFORMCONV = "onnxruntime-deformconv"
BENCHMARK_BACKENDS = (*BACKENDS, ONNXRUNTIME_DEFORMCONV)
# Autocast dtype of each precision; float32 runs without autocast.
PRECISIONS = {"fp32": None, "amp": torch.float16}


@dataclass(frozen=True)
class BenchmarkSettings:
    size: tuple[int, int]  # (height, width) of the benchmark image, batch 1
    threads: int
    device: str
    precisions: tuple[str, ...]
    warmup: int
    repeats: int
    output_dir: Path
    eval_dataset: str | None = None
    # --dataset NAME IMAGE_ROOT PANOPTIC_JSON PANOPTIC_ROOT entries, registered in every process.
    datasets: tuple[tuple[str, str, str, str], ...] = ()
    image: str | None = None  # image file; default: the eval dataset's first image, else noise
    tiny: bool = False  # configs shrunk to test size, tiny floor problems
    skip_reference: bool = False
    opts: tuple[str, ...] = ()  # KEY VALUE pairs applied to every config
    # Local copy of the official Panoptic FCN repository: the reference of Panoptic FCN configs.
    panoptic_fcn_official_src: str | None = None
    # Deployment backends (panoptic_zoo.deploy) timed besides eager PyTorch, CPU only.
    backends: tuple[str, ...] = ()

    @property
    def floor_problem(self) -> FloorProblem:
        return TINY_FLOOR if self.tiny else FULL_FLOOR

    def __post_init__(self):
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown:
            raise ValueError(
                f"unknown precisions {sorted(unknown)}; choose from {list(PRECISIONS)}"
            )
        if "amp" in self.precisions and not self.device.startswith("cuda"):
            raise ValueError("amp (float16 autocast) is measured on CUDA only: use --device cuda")
        unknown = set(self.backends) - set(BENCHMARK_BACKENDS)
        if unknown:
            raise ValueError(
                f"unknown backends {sorted(unknown)}; choose from {list(BENCHMARK_BACKENDS)}"
            )
        if self.backends and self.device != "cpu":
            raise ValueError("deployment backends are timed on the CPU only: use --device cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}, but CUDA is not available")


def load_config(path: str, settings: BenchmarkSettings) -> CfgNode:
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(settings.opts))
    set_dataset_arguments(cfg, settings.datasets)
    if settings.tiny:
        shrink_to_test_size(cfg)
    cfg.MODEL.DEVICE = settings.device
    if settings.eval_dataset:
        cfg.DATASETS.TEST = (settings.eval_dataset,)
        cfg.DATASETS.TRAIN = ()  # nothing is trained: the evaluated dataset's classes are the model's
    # Datasets of DATASETS.REGISTER and --dataset (e.g. for --eval-dataset on your own data);
    # the model's class counts are checked against them (and read from them when unset).
    register_from_config(cfg)
    check_class_counts(cfg)
    # Evaluation writes its files here (eval_results.json, predictions).
    cfg.OUTPUT_DIR = str(settings.output_dir / "evaluation" / Path(path).stem)
    cfg.freeze()
    return cfg


def image_source(settings: BenchmarkSettings) -> str | None:
    """The file the benchmark image is read from; None: seeded random pixels."""
    if settings.image:
        return settings.image
    if settings.eval_dataset:
        return DatasetCatalog.get(settings.eval_dataset)[0]["file_name"]
    return None


def benchmark_inputs(cfg: CfgNode, settings: BenchmarkSettings, source: str | None) -> list[dict]:
    """One image of exactly ``settings.size`` (the source image resized, aspect not kept)."""
    height, width = settings.size
    if source is None:
        generator = torch.Generator().manual_seed(0)
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
    else:
        pixels = read_image(source, format=cfg.INPUT.FORMAT)
        resized = np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))
        image = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    return [{"image": image, "height": height, "width": width}]


def build_model(cfg: CfgNode, weights: str) -> nn.Module:
    """``cfg``'s model as ``train_net.py --eval-only`` runs it, with ``weights`` loaded (none:
    its initialization, the same every time)."""
    torch.manual_seed(0)
    return build_inference_model(cfg, weights)
