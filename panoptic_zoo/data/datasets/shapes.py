"""Procedural "shapes" panoptic segmentation dataset, generated on demand.

The dataset is small enough to be generated in seconds on a laptop CPU, yet exercises
everything that makes panoptic methods differ: stuff regions with irregular, wavy
boundaries and class-specific textures; things of very different sizes (a few pixels up
to half the image) that touch and occlude each other; rings with real holes through
which the background shows; crowd regions (a cluster of tiny shapes labeled as a single
``iscrowd=1`` segment); and void (unlabeled) pixels. Category ids are deliberately
non-contiguous and panoptic segment ids are random 24-bit values, so id-mapping and
RGB-to-id decoding bugs surface instead of cancelling out.

On-disk layout (per split, e.g. ``train`` and ``val``)::

    <root>/
        images/<split>/<image_id:06d>.jpg    RGB JPEG, quality 95
        panoptic_<split>.json                COCO panoptic annotations
        panoptic_<split>/<image_id:06d>.png  segment ids as RGB: R + 256 G + 256^2 B, 0 = void
        panoptic_stuff_<split>/<image_id:06d>.png
                                             "separated" semantic labels (mode L): thing = 0,
                                             stuff = 1 + rank among stuff categories by id,
                                             void = 255
        instances_<split>.json               COCO instances (things only, RLE masks, iscrowd)
        DONE                                 JSON marker (generator version, spec), written last

Why this layout: it is the COCO panoptic layout, and the semantic PNGs follow exactly what
detectron2's ``datasets/prepare_panoptic_fpn.py`` writes for COCO. Hence detectron2's
``register_coco_panoptic(name, metadata, images/<split>, panoptic_<split>,
panoptic_<split>.json, instances_<split>.json)`` and ``register_coco_panoptic_separated(
name, metadata, images/<split>, panoptic_<split>, panoptic_<split>.json,
panoptic_stuff_<split>, instances_<split>.json)`` consume it unchanged, and the standard
COCO panoptic/instance evaluators work on it. Registration lives elsewhere.

Generation is deterministic: every image draws from its own generator seeded by
``(spec.seed, split name, image index)``. The whole dataset is written to a temporary
directory next to ``root`` and moved into place with ``os.replace``, so a dataset without a
valid ``DONE`` marker is never observed and concurrent generators do not corrupt each other.

This module deliberately depends only on numpy, Pillow and pycocotools (no torch or
detectron2) so it can run in lightweight tooling and tests.
"""

from __future__ import annotations

import colorsys
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

try:
    from tqdm import tqdm
except ImportError:  # tqdm is a project dependency; the progress bar is only a nicety.
    tqdm = None

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES_CATEGORIES",
    "ShapesSpec",
    "default_shapes_root",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
]

logger = logging.getLogger(__name__)

# Bump whenever the generated content changes for an unchanged spec: it is part of the
# cache directory name and of the DONE marker, so stale caches are regenerated.
GENERATOR_VERSION = 2

# Non-contiguous ids on purpose (see module docstring). Colors are the visualization
# colors stored in the panoptic JSON, not the colors used to render the images.
SHAPES_CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "disc", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "triangle", "isthing": 1, "color": [255, 140, 0]},
    {"id": 4, "name": "box", "isthing": 1, "color": [30, 144, 255]},
    {"id": 5, "name": "ring", "isthing": 1, "color": [148, 0, 211]},
    {"id": 7, "name": "star", "isthing": 1, "color": [255, 215, 0]},
    {"id": 10, "name": "sky", "isthing": 0, "color": [135, 206, 235]},
    {"id": 11, "name": "grass", "isthing": 0, "color": [34, 139, 34]},
    {"id": 13, "name": "water", "isthing": 0, "color": [0, 90, 140]},
    {"id": 14, "name": "brick", "isthing": 0, "color": [165, 82, 45]},
]

_DISC, _TRIANGLE, _BOX, _RING, _STAR = 1, 2, 4, 5, 7
_SKY, _GRASS, _WATER, _BRICK = 10, 11, 13, 14
_THING_IDS = tuple(c["id"] for c in SHAPES_CATEGORIES if c["isthing"])
_STUFF_IDS = tuple(c["id"] for c in SHAPES_CATEGORIES if not c["isthing"])
# prepare_panoptic_fpn.py: stuff -> 1 + rank among stuff categories, thing -> 0, void -> 255.
_SEMANTIC_STUFF_LABEL = {cid: index + 1 for index, cid in enumerate(_STUFF_IDS)}
_SEMANTIC_THING_LABEL = 0
_SEMANTIC_VOID_LABEL = 255

# Each thing class prefers a hue, but with a wide spread and frequent random hues, so
# that shape (not color) is what identifies the class.
_THING_PREFERRED_HUE = {_DISC: 0.0, _TRIANGLE: 0.12, _BOX: 0.33, _RING: 0.55, _STAR: 0.78}
_STUFF_BASE_RGB = {
    _SKY: (140, 190, 235),
    _GRASS: (70, 145, 55),
    _WATER: (35, 85, 160),
    _BRICK: (160, 75, 50),
}

_JPEG_QUALITY = 95
_DONE_NAME = "DONE"
_SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Owner-map codes for pixels that belong to no thing (thing indices are >= 0).
_OWNER_STUFF = -1
_OWNER_VOID = -2
_MIN_RING_RADIUS = 8.0  # below this the hole would vanish when rasterized
_INSTALL_ATTEMPTS = 5


@dataclass(frozen=True)
class ShapesSpec:
    """Everything that determines the generated dataset (part of its cache key).

    ``splits`` maps split name to image count; a mapping is accepted and normalized to a
    tuple of pairs so the spec stays hashable.
    """

    seed: int = 0
    splits: tuple[tuple[str, int], ...] = (("train", 300), ("val", 50))
    min_size: int = 96  # image width and height are drawn independently in [min_size, max_size]
    max_size: int = 160
    max_things: int = 8  # non-crowd things drawn per image, before occlusion culling
    min_thing_area: int = 12  # things with fewer visible pixels are removed
    min_stuff_area: int = 128  # smaller stuff segments are absorbed by neighboring stuff
    crowd_prob: float = 0.2  # fraction of images with one crowd segment
    void_prob: float = 0.3  # fraction of images with void pixels

    def __post_init__(self) -> None:
        splits = self.splits.items() if isinstance(self.splits, Mapping) else self.splits
        object.__setattr__(self, "splits", tuple((str(name), int(count)) for name, count in splits))
        names = [name for name, _ in self.splits]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate split names in {names}")
        for name, count in self.splits:
            if not _SPLIT_NAME_RE.match(name):
                raise ValueError(f"invalid split name {name!r}")
            if count < 0:
                raise ValueError(f"negative image count for split {name!r}")
        if self.seed < 0:
            raise ValueError("seed must be non-negative")
        if not 32 <= self.min_size <= self.max_size:
            raise ValueError("need 32 <= min_size <= max_size")
        if self.max_things < 0 or self.min_thing_area < 1 or self.min_stuff_area < 1:
            raise ValueError("max_things must be >= 0, min_thing_area and min_stuff_area >= 1")
        if not (0.0 <= self.crowd_prob <= 1.0 and 0.0 <= self.void_prob <= 1.0):
            raise ValueError("crowd_prob and void_prob must lie in [0, 1]")

    def to_json_dict(self) -> dict[str, Any]:
        """The spec as plain JSON types (tuples become lists), as recorded in DONE."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def short_hash(self) -> str:
        """Stable short digest of the spec, used to keep caches of different specs apart."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def default_shapes_root(spec: ShapesSpec = ShapesSpec()) -> Path:
    """Cache directory for ``spec``: ``$PANOPTIC_ZOO_DATASETS`` or
    ``${XDG_CACHE_HOME:-~/.cache}/panoptic_zoo/datasets``, plus a version/spec subdir."""
    base = os.environ.get("PANOPTIC_ZOO_DATASETS")
    if base:
        base_dir = Path(base).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        base_dir = Path(cache).expanduser() / "panoptic_zoo" / "datasets"
    return (base_dir / f"shapes-v{GENERATOR_VERSION}-{spec.short_hash()}").absolute()


def ensure_shapes_dataset(root: str | Path | None = None, spec: ShapesSpec = ShapesSpec()) -> Path:
    """Return the dataset directory, generating it only if it is missing or stale.

    ``root`` is the dataset directory itself; by default it is ``default_shapes_root(spec)``.
    A dataset counts as present when its DONE marker records this spec and generator version.
    """
    root = (default_shapes_root(spec) if root is None else Path(root).expanduser()).absolute()
    if _is_complete(root, spec):
        logger.debug("shapes dataset already present at %s", root)
    else:
        generate_shapes_dataset(root, spec)
    return root


def generate_shapes_dataset(root: str | Path, spec: ShapesSpec = ShapesSpec()) -> dict[str, Any]:
    """Generate the dataset for ``spec`` at ``root`` (atomically) and return its DONE record.

    The record holds ``generator_version``, ``spec`` and per-split ``stats``. An existing
    dataset at ``root`` is replaced unless it is already complete for ``spec`` (then the
    freshly generated copy, identical by determinism, is discarded). A non-empty ``root``
    that does not look like a shapes dataset is never deleted: FileExistsError is raised.
    """
    root = Path(root).expanduser().absolute()
    root.parent.mkdir(parents=True, exist_ok=True)
    # Beside root (same filesystem), so the final os.replace is an atomic rename. Not
    # tempfile.mkdtemp: its 0700 mode would make a shared cache unreadable to others.
    staging = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        logger.info("generating shapes dataset (%s) at %s", _describe(spec), root)
        stats = {name: _write_split(staging, name, count, spec) for name, count in spec.splits}
        record = {
            "generator_version": GENERATOR_VERSION,
            "spec": spec.to_json_dict(),
            "stats": stats,
        }
        # DONE goes last: its presence certifies everything else was written.
        _write_json(staging / _DONE_NAME, record, indent=2)
        _install(staging, root, spec)
    finally:
        # No-op once installed; cleans up after failures or when another process won.
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("shapes dataset ready at %s", root)
    return record


# --------------------------------------------------------------------------------------
# Installing and checking datasets on disk


def _is_complete(root: Path, spec: ShapesSpec) -> bool:
    try:
        record = json.loads((root / _DONE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("generator_version") == GENERATOR_VERSION
        and record.get("spec") == spec.to_json_dict()
    )


def _looks_like_shapes_dataset(root: Path) -> bool:
    """Whether every entry of ``root`` is something this generator writes (or it is empty)."""
    return all(
        entry.name in ("images", _DONE_NAME) or entry.name.startswith(("panoptic_", "instances_"))
        for entry in root.iterdir()
    )


def _install(staging: Path, root: Path, spec: ShapesSpec) -> None:
    for _ in range(_INSTALL_ATTEMPTS):
        if _is_complete(root, spec):
            logger.info("%s already holds this dataset; discarding the new copy", root)
            return
        try:
            os.replace(staging, root)  # atomic; also succeeds when root is an empty directory
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        # root holds a stale or partial dataset (or a concurrent generator just won).
        if _is_complete(root, spec):
            continue
        if not _looks_like_shapes_dataset(root):
            raise FileExistsError(
                f"refusing to replace {root}: it does not look like a shapes dataset"
            )
        discarded = root.with_name(f".{root.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(root, discarded)
        except FileNotFoundError:  # another process moved it first
            continue
        logger.info("replacing stale shapes dataset at %s", root)
        shutil.rmtree(discarded, ignore_errors=True)
    raise RuntimeError(
        f"could not install shapes dataset at {root} after {_INSTALL_ATTEMPTS} attempts"
    )


def _describe(spec: ShapesSpec) -> str:
    return ", ".join(f"{name}={count}" for name, count in spec.splits) + f", seed={spec.seed}"


# --------------------------------------------------------------------------------------
# Writing a split


@dataclass
class _Segment:
    id: int
    category_id: int
    iscrowd: int
    mask: np.ndarray  # bool (H, W), visible pixels only


@dataclass
class _Sample:
    image: np.ndarray  # uint8 (H, W, 3)
    segment_ids: np.ndarray  # uint32 (H, W), 0 = void
    segments: list[_Segment]


def _split_key(name: str) -> int:
    # Stable across processes (unlike hash()), so each split gets its own random stream.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def _progress(items: Iterable[int], total: int, desc: str) -> Iterator[int]:
    if tqdm is None:
        return iter(items)
    return iter(tqdm(items, total=total, desc=desc, leave=False, disable=None))


def _write_split(root: Path, split: str, count: int, spec: ShapesSpec) -> dict[str, int]:
    image_dir = root / "images" / split
    panoptic_dir = root / f"panoptic_{split}"
    semantic_dir = root / f"panoptic_stuff_{split}"
    for directory in (image_dir, panoptic_dir, semantic_dir):
        directory.mkdir(parents=True)

    images: list[dict[str, Any]] = []
    panoptic_annotations: list[dict[str, Any]] = []
    instance_annotations: list[dict[str, Any]] = []
    stats = {"images": count, "segments": 0, "things": 0, "crowd": 0, "images_with_void": 0}
    split_key = _split_key(split)
    for index in _progress(range(count), count, f"shapes/{split}"):
        image_id = index + 1  # COCO ids start at 1; 0 is treated as "missing" by some tools
        sample = _generate_sample(np.random.default_rng([spec.seed, split_key, index]), spec)
        height, width = sample.segment_ids.shape
        stem = f"{image_id:06d}"

        Image.fromarray(sample.image).save(image_dir / f"{stem}.jpg", quality=_JPEG_QUALITY)
        Image.fromarray(_ids_to_rgb(sample.segment_ids)).save(panoptic_dir / f"{stem}.png")
        Image.fromarray(_semantic_labels(sample)).save(semantic_dir / f"{stem}.png")

        images.append(
            {"id": image_id, "file_name": f"{stem}.jpg", "width": width, "height": height}
        )
        segments_info = []
        for segment in sample.segments:
            area, bbox = _area_and_bbox(segment.mask)
            segments_info.append(
                {
                    "id": segment.id,
                    "category_id": segment.category_id,
                    "iscrowd": segment.iscrowd,
                    "bbox": bbox,
                    "area": area,
                }
            )
            if segment.category_id in _THING_IDS:
                rle = mask_utils.encode(np.asfortranarray(segment.mask, dtype=np.uint8))
                instance_annotations.append(
                    {
                        "id": len(instance_annotations) + 1,
                        "image_id": image_id,
                        "category_id": segment.category_id,
                        "iscrowd": segment.iscrowd,
                        "bbox": bbox,
                        "area": area,
                        "segmentation": {
                            "size": rle["size"],
                            "counts": rle["counts"].decode("ascii"),
                        },
                    }
                )
                stats["things"] += 1
                stats["crowd"] += segment.iscrowd
        panoptic_annotations.append(
            {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments_info}
        )
        stats["segments"] += len(segments_info)
        stats["images_with_void"] += int(not sample.segment_ids.all())

    info = {
        "description": f"panoptic_zoo procedural shapes ({split})",
        "version": str(GENERATOR_VERSION),
    }
    categories = [
        {**c, "supercategory": "shape" if c["isthing"] else "background"} for c in SHAPES_CATEGORIES
    ]
    _write_json(
        root / f"panoptic_{split}.json",
        {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": panoptic_annotations,
            "categories": categories,
        },
    )
    _write_json(
        root / f"instances_{split}.json",
        {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": instance_annotations,
            "categories": [c for c in categories if c["isthing"]],
        },
    )
    return stats


def _write_json(path: Path, payload: Any, indent: int | None = None) -> None:
    # json.dumps (unlike json.dump) uses the C encoder, several times faster here.
    path.write_text(json.dumps(payload, indent=indent))


def _ids_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
    channels = [(segment_ids >> shift) & 0xFF for shift in (0, 8, 16)]  # R, G, B
    return np.stack(channels, axis=-1).astype(np.uint8)


def _semantic_labels(sample: _Sample) -> np.ndarray:
    labels = np.full(sample.segment_ids.shape, _SEMANTIC_VOID_LABEL, dtype=np.uint8)
    for segment in sample.segments:
        labels[segment.mask] = _SEMANTIC_STUFF_LABEL.get(segment.category_id, _SEMANTIC_THING_LABEL)
    return labels


def _area_and_bbox(mask: np.ndarray) -> tuple[int, list[int]]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return int(mask.sum()), [x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1]


# --------------------------------------------------------------------------------------
# Generating one image: geometry first (labels), then appearance (pixels)


@dataclass(frozen=True)
class _Look:
    rgb: np.ndarray  # float (3,), 0..255
    pattern: str  # "flat" | "stripes" | "gradient" | "speckle"
    period: float  # stripe period in pixels
    direction: float  # stripe / gradient direction relative to the shape, radians
    outline: bool  # darker 1-px border, which helps telling touching instances apart


@dataclass(frozen=True)
class _Shape:
    mask: np.ndarray  # bool (H, W), full footprint including later-occluded parts
    angle: float
    radius: float


@dataclass(frozen=True)
class _Thing:
    category_id: int
    iscrowd: int
    look: _Look
    shapes: tuple[_Shape, ...]  # one shape, or the members of a crowd cluster

    @property
    def footprint(self) -> np.ndarray:
        return np.logical_or.reduce([shape.mask for shape in self.shapes])


def _generate_sample(rng: np.random.Generator, spec: ShapesSpec) -> _Sample:
    height = int(rng.integers(spec.min_size, spec.max_size + 1))
    width = int(rng.integers(spec.min_size, spec.max_size + 1))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    stuff_costs, seed_classes = _sample_stuff_layout(rng, yy, xx)
    things = _sample_things(rng, spec, height, width)
    void = _sample_void(rng, height, width) if rng.random() < spec.void_prob else None

    # Drop things that ended up (nearly) invisible. Removing a thing only uncovers pixels
    # of earlier things, so the survivors still pass the threshold after one recompute.
    owner = _compose_owner(things, void, height, width)
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(things))
    things = [
        thing for thing, count in zip(things, visible, strict=True) if count >= spec.min_thing_area
    ]
    owner = _compose_owner(things, void, height, width)
    stuff_labels = _assign_stuff(
        stuff_costs, seed_classes, owner == _OWNER_STUFF, spec.min_stuff_area
    )

    image = _render(rng, yy, xx, stuff_labels, things, void)

    masks: list[tuple[int, int, np.ndarray]] = []
    for category_id in _STUFF_IDS:
        mask = (owner == _OWNER_STUFF) & (stuff_labels == category_id)
        if mask.any():
            masks.append((category_id, 0, mask))
    masks.extend(
        (thing.category_id, thing.iscrowd, owner == index) for index, thing in enumerate(things)
    )

    segment_ids = np.zeros((height, width), dtype=np.uint32)
    segments = []
    for (category_id, iscrowd, mask), segment_id in zip(
        masks, _unique_segment_ids(rng, len(masks)), strict=True
    ):
        segment_ids[mask] = segment_id
        segments.append(_Segment(segment_id, category_id, iscrowd, mask))
    return _Sample(image, segment_ids, segments)


def _unique_segment_ids(rng: np.random.Generator, count: int) -> list[int]:
    # Random 24-bit ids (like COCO's color-derived ids) use all three PNG channels and carry
    # no category information, so decoding shortcuts such as id // 1000 fail loudly.
    ids: list[int] = []
    while len(ids) < count:
        candidate = int(rng.integers(1, 1 << 24))
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _compose_owner(
    things: list[_Thing], void: np.ndarray | None, height: int, width: int
) -> np.ndarray:
    """Per pixel: index of the topmost thing, _OWNER_STUFF, or _OWNER_VOID (void is on top)."""
    owner = np.full((height, width), _OWNER_STUFF, dtype=np.int16)
    for index, thing in enumerate(things):
        owner[thing.footprint] = index
    if void is not None:
        owner[void] = _OWNER_VOID
    return owner


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise: a coarse random grid upsampled with smoothstep-bilinear interpolation.

    Interpolation is separable, so it is two small matrix products (fast for small images).
    """
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return _interpolation_matrix(height, cells) @ grid @ _interpolation_matrix(width, cells).T


@functools.cache
def _interpolation_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) weights mapping grid nodes to pixels along one axis (read-only)."""
    pos = np.linspace(0.0, cells, size, dtype=np.float32)
    lower = np.minimum(pos.astype(np.int64), cells - 1)
    frac = pos - lower
    frac = frac * frac * (3.0 - 2.0 * frac)
    weights = np.zeros((size, cells + 1), dtype=np.float32)
    weights[np.arange(size), lower] = 1.0 - frac
    weights[np.arange(size), lower + 1] = frac
    weights.flags.writeable = False
    return weights


def _sample_stuff_layout(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-perturbed Voronoi layout: per-seed costs (S, H, W) and each seed's stuff class.

    A pixel belongs to the seed of least cost; the noise makes region borders wavy.
    """
    height, width = yy.shape
    num_classes = int(rng.integers(2, 5))
    classes = rng.choice(_STUFF_IDS, size=num_classes, replace=False)
    extra = rng.choice(classes, size=int(rng.integers(0, 3)))
    seed_classes = np.concatenate([classes, extra])
    amplitude = 0.12 * (height + width)
    costs = np.empty((len(seed_classes), height, width), dtype=np.float32)
    for index in range(len(seed_classes)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        noise = _smooth_noise(rng, height, width, 3) + 0.5 * _smooth_noise(rng, height, width, 7)
        costs[index] = np.hypot(yy - cy, xx - cx) + amplitude * noise
    return costs, seed_classes


def _assign_stuff(
    costs: np.ndarray, seed_classes: np.ndarray, visible_stuff: np.ndarray, min_area: int
) -> np.ndarray:
    """Stuff class per pixel; classes with too few visible pixels are absorbed by their
    neighbors (the next-cheapest seeds). The largest class is always kept."""
    labels = seed_classes[np.argmin(costs, axis=0)]
    areas = {
        int(c): int(np.count_nonzero(visible_stuff & (labels == c)))
        for c in np.unique(seed_classes)
    }
    largest = max(areas, key=lambda c: areas[c])
    dropped = [c for c, area in areas.items() if area < min_area and c != largest]
    if not dropped:
        return labels
    # Absorbing only grows the remaining classes, so one pass suffices.
    kept = ~np.isin(seed_classes, dropped)
    return seed_classes[kept][np.argmin(costs[kept], axis=0)]


def _random_look(rng: np.random.Generator, category_id: int) -> _Look:
    if rng.random() < 0.25:  # a quarter of things ignore the class's preferred hue
        hue = rng.random()
    else:
        hue = (_THING_PREFERRED_HUE[category_id] + rng.normal(0.0, 0.12)) % 1.0
    rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.35, 1.0), rng.uniform(0.5, 1.0))) * 255.0
    return _Look(
        rgb=rgb,
        pattern=str(rng.choice(["flat", "stripes", "gradient", "speckle"])),
        period=float(rng.uniform(3.0, 8.0)),
        direction=float(rng.uniform(0.0, np.pi)),
        outline=bool(rng.random() < 0.5),
    )


def _outline_points(
    category_id: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Polygon of the shape in unit coordinates (radius 1), and the hole polygon for rings."""
    if category_id in (_DISC, _RING):
        theta = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        circle = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        hole = circle * rng.uniform(0.45, 0.62) if category_id == _RING else None
        return circle, hole
    if category_id == _BOX:
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) / np.sqrt(2.0), None
    if category_id == _TRIANGLE:
        theta = np.deg2rad([-90.0, 30.0, 150.0])
        return np.stack([np.cos(theta), np.sin(theta)], axis=1), None
    if category_id == _STAR:
        theta = np.linspace(-np.pi / 2, 3 * np.pi / 2, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return np.stack([np.cos(theta) * radii, np.sin(theta) * radii], axis=1), None
    raise ValueError(f"not a thing category: {category_id}")


def _rasterize(polygon: np.ndarray, hole: np.ndarray | None, height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in polygon.tolist()], fill=1)
    if hole is not None:
        draw.polygon([tuple(p) for p in hole.tolist()], fill=0)
    return np.asarray(canvas, dtype=bool)


def _sample_shape(
    rng: np.random.Generator,
    category_id: int,
    center: np.ndarray,
    radius: float,
    height: int,
    width: int,
) -> _Shape:
    outline, hole = _outline_points(category_id, rng)
    # Rings and stars stay roughly round so they remain recognizable.
    aspect = rng.uniform(0.7, 1.0) if category_id in (_RING, _STAR) else rng.uniform(0.5, 1.0)
    angle = float(rng.uniform(0.0, 2 * np.pi))
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    scale = np.array([radius, radius * aspect])

    def place(points: np.ndarray) -> np.ndarray:
        return (points * scale) @ rotation + center

    return _Shape(
        mask=_rasterize(place(outline), None if hole is None else place(hole), height, width),
        angle=angle,
        radius=radius,
    )


def _sample_things(
    rng: np.random.Generator, spec: ShapesSpec, height: int, width: int
) -> list[_Thing]:
    """Things in drawing order (later ones occlude earlier ones)."""
    max_radius = 0.3 * min(height, width)  # diameters up to ~60% of the shorter image side
    things: list[_Thing] = []
    centers: list[tuple[np.ndarray, float]] = []
    num_things = int(rng.integers(1, spec.max_things + 1)) if spec.max_things > 0 else 0
    for _ in range(num_things):
        category_id = int(rng.choice(_THING_IDS))
        # Log-uniform sizes: many small things (down to ~6 px across), a few large ones.
        radius = float(np.exp(rng.uniform(np.log(3.0), np.log(max_radius))))
        if category_id == _RING:
            radius = max(radius, _MIN_RING_RADIUS)
        if centers and rng.random() < 0.4:
            # Place next to an existing thing so that instances touch and overlap.
            anchor, anchor_radius = centers[int(rng.integers(len(centers)))]
            direction = rng.uniform(0.0, 2 * np.pi)
            distance = (anchor_radius + radius) * rng.uniform(0.5, 1.0)
            center = anchor + distance * np.array([np.cos(direction), np.sin(direction)])
        else:
            center = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        shape = _sample_shape(rng, category_id, center, radius, height, width)
        things.append(_Thing(category_id, 0, _random_look(rng, category_id), (shape,)))
        centers.append((center, radius))

    if rng.random() < spec.crowd_prob:
        # A cluster of tiny same-class shapes annotated as one iscrowd=1 segment, inserted at
        # a random depth so it can both occlude and be occluded.
        category_id = int(rng.choice(_THING_IDS))
        cluster_center = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height])
        spread = rng.uniform(5.0, 12.0)
        members = tuple(
            _sample_shape(
                rng,
                category_id,
                cluster_center + rng.normal(0.0, spread, 2),
                rng.uniform(2.5, 5.0),
                height,
                width,
            )
            for _ in range(int(rng.integers(5, 13)))
        )
        crowd = _Thing(category_id, 1, _random_look(rng, category_id), members)
        things.insert(int(rng.integers(len(things) + 1)), crowd)
    return things


def _sample_void(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Unlabeled pixels: a thin band along some image borders, or a few irregular blobs."""
    void = np.zeros((height, width), dtype=bool)
    if rng.random() < 0.35:
        band = int(rng.integers(1, 4))
        sides = rng.random(4) < 0.5
        sides[int(rng.integers(4))] = True
        top, bottom, left, right = sides
        void[:band] |= top
        void[-band:] |= bottom
        void[:, :band] |= left
        void[:, -band:] |= right
        return void
    for _ in range(int(rng.integers(1, 5))):
        vertices = int(rng.integers(7, 13))
        theta = np.sort(rng.uniform(0.0, 2 * np.pi, vertices))
        radii = rng.uniform(3.0, 9.0) * rng.uniform(0.5, 1.3, vertices)
        center = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        blob = center + np.stack([np.cos(theta) * radii, np.sin(theta) * radii], axis=1)
        void |= _rasterize(blob, None, height, width)
    return void


# --------------------------------------------------------------------------------------
# Appearance


def _stuff_texture(
    rng: np.random.Generator, category_id: int, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """Full-image texture (H, W, 3) for one stuff class, with per-image color jitter."""
    height, width = yy.shape
    # float32 throughout: these full-image arrays dominate the generation time.
    jittered = np.asarray(_STUFF_BASE_RGB[category_id]) + rng.uniform(-25.0, 25.0, 3)
    base = jittered.astype(np.float32)
    if category_id == _SKY:  # vertical gradient with soft clouds
        shade = 1.12 - 0.25 * yy / max(height - 1, 1)
        cloudiness = np.float32(rng.uniform(0.2, 0.5))
        clouds = np.clip(cloudiness * _smooth_noise(rng, height, width, 4), 0.0, 1.0)
        rgb = base * shade[..., None]
        return rgb + (255.0 - rgb) * clouds[..., None]
    if category_id == _GRASS:  # vertical blades plus fine grain
        frequency = np.float32(rng.uniform(0.6, 1.4))
        wobble = 2.0 * _smooth_noise(rng, height, width, 5)
        grain = rng.standard_normal((height, width), dtype=np.float32)
        shade = 0.9 + 0.15 * np.sin(xx * frequency + wobble) + 0.1 * grain
        return base * shade[..., None]
    if category_id == _WATER:  # horizontal wavy stripes
        period = np.float32(rng.uniform(5.0, 10.0))
        amplitude = np.float32(rng.uniform(1.0, 3.0))
        wavelength = np.float32(rng.uniform(20.0, 40.0))
        phase = np.float32(rng.uniform(0, 2 * np.pi))
        wave = amplitude * np.sin(np.float32(2 * np.pi) * xx / wavelength + phase)
        shade = 0.9 + 0.18 * np.sin(np.float32(2 * np.pi) * (yy + wave) / period)
        return base * shade[..., None]
    if category_id == _BRICK:  # staggered bricks with mortar lines
        brick_h, brick_w = int(rng.integers(6, 11)), int(rng.integers(12, 21))
        row = (yy // brick_h).astype(np.int64)
        shifted = xx + ((row % 2) * (brick_w // 2)).astype(np.float32)
        col = (shifted // brick_w).astype(np.int64)
        jitter = rng.uniform(0.85, 1.15, (16, 16)).astype(np.float32)
        rgb = base * jitter[row % 16, col % 16][..., None]
        mortar = ((yy % brick_h) < 1) | ((shifted % brick_w) < 1)
        rgb[mortar] = rng.uniform(170.0, 210.0)
        return rgb
    raise ValueError(f"not a stuff category: {category_id}")


def _paint_shape(rng: np.random.Generator, canvas: np.ndarray, shape: _Shape, look: _Look) -> None:
    rows = np.flatnonzero(shape.mask.any(axis=1))
    cols = np.flatnonzero(shape.mask.any(axis=0))
    if rows.size == 0:  # entirely outside the image
        return
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    mask = shape.mask[window]
    ys, xs = np.mgrid[window].astype(np.float32)
    # Patterns are laid out in the shape's own frame so they rotate with it.
    direction = shape.angle + look.direction
    along = xs * np.cos(direction) + ys * np.sin(direction)
    if look.pattern == "stripes":
        shade = np.where((along / look.period) % 1.0 < 0.5, 1.0, 0.6)
    elif look.pattern == "gradient":
        shade = 1.0 + 0.35 * (along - along.mean()) / max(shape.radius, 1.0)
    elif look.pattern == "speckle":
        shade = 1.0 + rng.normal(0.0, 0.18, mask.shape)
    else:
        shade = np.ones(mask.shape)
    rgb = look.rgb * shade[..., None]
    if look.outline:
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        rgb[mask & ~inner] *= 0.45
    canvas[window][mask] = rgb[mask]


def _render(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    stuff_labels: np.ndarray,
    things: list[_Thing],
    void: np.ndarray | None,
) -> np.ndarray:
    canvas = np.empty((*yy.shape, 3), dtype=np.float32)
    for category_id in _STUFF_IDS:
        region = stuff_labels == category_id
        if region.any():
            np.copyto(canvas, _stuff_texture(rng, category_id, yy, xx), where=region[..., None])
    for thing in things:  # painter's algorithm: same order as the owner map
        for shape in thing.shapes:
            _paint_shape(rng, canvas, shape, thing.look)
    if void is not None:  # visual clutter that is deliberately left unlabeled
        canvas[void] = rng.uniform(0.0, 255.0, 3) + rng.normal(0.0, 40.0, (int(void.sum()), 3))
    canvas += 2.5 * rng.standard_normal(canvas.shape, dtype=np.float32)  # mild sensor noise
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
