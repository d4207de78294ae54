"""Side-by-side pictures of ground truth and predicted panoptic segmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from tqdm import tqdm

from ..data.mappers import read_image_checked, read_panoptic_png

__all__ = ["draw_panoptic", "save_panoptic_comparisons"]


def draw_panoptic(
    image_rgb: np.ndarray, segment_ids: torch.Tensor, segments_info: list[dict], metadata, scale: float
) -> np.ndarray:
    """detectron2's panoptic drawing of one image (RGB uint8 in, RGB uint8 out)."""
    visualizer = Visualizer(image_rgb, metadata, scale=scale)
    return visualizer.draw_panoptic_seg(segment_ids, segments_info).get_image()


@torch.no_grad()
def save_panoptic_comparisons(
    model, dataset_name: str, mapper, out_dir: str | Path, num_images: int = 8, scale: float = 3.0
) -> list[Path]:
    """
    For the first ``num_images`` of ``dataset_name``: image | ground truth | prediction, as one
    PNG per image in ``out_dir``. ``mapper`` is the test-time dataset mapper of the model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = MetadataCatalog.get(dataset_name)
    model.eval()
    written = []
    for record in tqdm(DatasetCatalog.get(dataset_name)[:num_images], desc="visualize", unit="img"):
        image_rgb = read_image_checked(record["file_name"], "RGB")
        gt_ids = torch.from_numpy(read_panoptic_png(record, image_rgb.shape[:2]))
        gt = draw_panoptic(image_rgb, gt_ids, record["segments_info"], metadata, scale)
        segment_ids, segments_info = model([mapper(record)])[0]["panoptic_seg"]
        pred = draw_panoptic(image_rgb, segment_ids.cpu(), segments_info, metadata, scale)
        plain = utils.convert_PIL_to_numpy(
            Image.fromarray(image_rgb).resize(gt.shape[1::-1], Image.BILINEAR), "RGB"
        )
        panel = np.concatenate([plain, gt, pred], axis=1)
        path = out_dir / f"{Path(record['file_name']).stem}_image_gt_pred.png"
        Image.fromarray(panel).save(path)
        written.append(path)
    return written
