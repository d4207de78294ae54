#!/usr/bin/env python
"""
Write a small COCO-panoptic-format dataset of four real photographs, the example that
docs/DATASETS.md walks through: scikit-image's astronaut (512x512), coffee (600x400), chelsea
(451x300) and rocket (640x427) photos, with coarse hand-drawn panoptic annotations (polygons
and ellipses traced on a 50 px grid; good enough to train and evaluate on, not a benchmark).

    python tools/make_photo_dataset.py datasets/photos               # real size
    python tools/make_photo_dataset.py datasets/photos_small --scale 0.25

Writes ``<root>/images/*.jpg``, ``<root>/panoptic/*.png`` (ids R + 256 G + 256^2 B) and
``<root>/panoptic.json`` (images, annotations with segments_info, categories with isthing and
color): the layout docs/DATASETS.md asks for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Dataset category ids: things 1-9, stuff 10 and up (any ids work; separated ids are derived).
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "cup", "isthing": 1, "color": [119, 11, 32]},
    {"id": 3, "name": "spoon", "isthing": 1, "color": [0, 0, 142]},
    {"id": 4, "name": "cat", "isthing": 1, "color": [0, 0, 230]},
    {"id": 5, "name": "rocket", "isthing": 1, "color": [106, 0, 228]},
    {"id": 6, "name": "helmet", "isthing": 1, "color": [0, 60, 100]},
    {"id": 7, "name": "tower", "isthing": 1, "color": [0, 80, 100]},
    {"id": 8, "name": "plate", "isthing": 1, "color": [0, 0, 70]},
    {"id": 10, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 11, "name": "wall", "isthing": 0, "color": [102, 102, 156]},
    {"id": 12, "name": "table", "isthing": 0, "color": [190, 153, 153]},
    {"id": 13, "name": "flag", "isthing": 0, "color": [250, 170, 30]},
    {"id": 14, "name": "ground", "isthing": 0, "color": [152, 251, 152]},
]


def _ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 48) -> list:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


# Per photo: the background stuff class, then (category, polygon) painted in order (later on top),
# in the photo's own pixel coordinates.
PHOTOS = {
    "astronaut": (
        "wall",
        [
            ("flag", [(0, 0), (100, 0), (100, 230), (40, 280), (20, 512), (0, 512)]),
            ("rocket", [(395, 0), (440, 0), (450, 120), (470, 270), (360, 270), (385, 120)]),
            ("person", [(150, 60), (180, 20), (250, 15), (300, 60), (300, 130), (340, 250),
                        (360, 330), (340, 512), (30, 512), (25, 330), (60, 270), (120, 230),
                        (160, 180)]),  # fmt: skip
            ("helmet", _ellipse(390, 440, 115, 95)),
        ],
    ),
    "coffee": (
        "table",
        [
            ("plate", _ellipse(280, 250, 205, 140)),
            ("cup", [(172, 60), (200, 25), (300, 15), (400, 30), (410, 90), (395, 200),
                     (340, 250), (250, 255), (230, 305), (195, 300), (195, 240), (180, 190)]),
            ("spoon", [(405, 70), (420, 70), (400, 230), (405, 290), (380, 325), (335, 315),
                       (330, 270), (360, 245), (385, 220)]),  # fmt: skip
        ],
    ),
    "chelsea": (
        "wall",
        [("cat", [(0, 0), (360, 0), (400, 60), (380, 300), (0, 300)])],
    ),
    "rocket": (
        "sky",
        [
            ("ground", [(0, 365), (640, 355), (640, 427), (0, 427)]),
            ("tower", [(0, 0), (90, 0), (85, 140), (40, 427), (0, 427)]),
            ("tower", [(180, 120), (205, 120), (205, 400), (165, 400)]),
            ("tower", [(440, 125), (450, 125), (470, 400), (435, 400)]),
            ("tower", [(560, 0), (620, 0), (640, 60), (640, 427), (585, 427), (570, 250)]),
            ("rocket", [(308, 150), (320, 128), (332, 150), (335, 400), (305, 400)]),
        ],
    ),
}


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def _ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_photo_dataset(root: str | Path, scale: float = 1.0) -> Path:
    """Write the dataset at ``root`` with photos resized by ``scale``; returns its JSON."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "panoptic").mkdir(parents=True, exist_ok=True)
    category_ids = {c["name"]: c["id"] for c in CATEGORIES}
    images, annotations = [], []
    for image_id, (name, (background, shapes)) in enumerate(PHOTOS.items(), start=1):
        photo = Image.fromarray(_photo(name))
        width, height = round(photo.width * scale), round(photo.height * scale)
        photo = photo.resize((width, height), Image.BILINEAR) if scale != 1.0 else photo
        photo.save(root / "images" / f"{name}.jpg", quality=92)
        labels = Image.new("I", (width, height), 0)
        draw = ImageDraw.Draw(labels)
        # Segment ids: 1 for the background stuff, then one per painted shape (stuff classes
        # painted twice would share a segment; here each appears once per photo).
        segments = {1: category_ids[background]}
        draw.rectangle([0, 0, width, height], fill=1)
        for index, (category, polygon) in enumerate(shapes, start=2):
            draw.polygon([(x * scale, y * scale) for x, y in polygon], fill=index)
            segments[index] = category_ids[category]
        ids = np.asarray(labels, dtype=np.int64) * 37  # spread ids over the colors
        Image.fromarray(_ids_to_rgb(ids)).save(root / "panoptic" / f"{name}.png")
        segments_info = []
        for index, category in segments.items():
            mask = ids == index * 37
            if not mask.any():
                continue  # covered by later shapes at this scale
            ys, xs = np.nonzero(mask)
            bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            segments_info.append(
                {"id": index * 37, "category_id": category, "iscrowd": 0,
                 "area": int(mask.sum()), "bbox": bbox}  # fmt: skip
            )
        images.append({"id": image_id, "file_name": f"{name}.jpg", "width": width,
                       "height": height})  # fmt: skip
        annotations.append(
            {"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments_info}
        )
    panoptic_json = root / "panoptic.json"
    panoptic_json.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return panoptic_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("root", help="directory to write the dataset into")
    parser.add_argument("--scale", type=float, default=1.0, help="resize the photos by this")
    args = parser.parse_args(argv)
    print(f"wrote {write_photo_dataset(args.root, args.scale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
