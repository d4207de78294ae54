"""
Panoptic-DeepLab post-processing as batched tensor code, without Python loops over centers,
instances or classes, on CPU and GPU.

It computes what detectron2's ``projects/panoptic_deeplab/post_processing.py`` computes (the
same centers, the same nearest-center grouping and majority vote, the same instance numbering)
on ``N`` images of one size at once. On images with many centers the reference spends almost
all its time in ``torch.norm`` over a ``[centers, pixels, 2]`` tensor. Here distances are computed only for predicted thing pixels and only to the few centers that
can be nearest to each pixel (a per-tile bound), with the reference's own arithmetic, so the
assignments are identical (``tools/benchmark_panoptic_deeplab_postprocess.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances

from ...layers import window_max
from ...postprocess import class_argmax, class_logsumexps, crop_and_resize, panoptic_output
from .ids import UnifiedIds

__all__ = [
    "PanopticDeepLabPostprocessor",
    "find_instance_centers",
    "group_pixels",
    "merge_semantic_and_instance",
    "get_panoptic_segmentation",
]

# Label of pixels without a segment in get_panoptic_segmentation's output.
VOID = -1
# Bound on the elements of one [pixels, candidate centers] distance chunk.
_DISTANCE_CHUNK_ELEMENTS = 1 << 23
# Side (pixels) of the square tiles of moved-pixel locations that share candidate centers.
_TILE = 32


def find_instance_centers(
    center_heatmaps: torch.Tensor, threshold: float, nms_kernel: int, top_k: int | None
) -> torch.Tensor:
    """
    Instance centers of ``center_heatmaps`` ``[N, H, W]``: scores above ``threshold`` that are
    the maximum of their ``nms_kernel`` window, and (when ``top_k`` is given) above the
    ``top_k``-th largest such score of their image, as in the reference (which therefore keeps
    at most ``top_k - 1`` centers when scores are distinct).

    Returns ``[K, 3]`` int64 rows ``(image, y, x)`` in row-major order within each image.
    """
    scores = F.threshold(center_heatmaps, threshold, -1.0)
    pooled = window_max(scores, nms_kernel)
    scores = scores.masked_fill(scores != pooled, -1.0)
    if top_k is None:
        return torch.nonzero(scores > 0)
    flat = scores.flatten(1)
    kth_score = torch.topk(flat, min(top_k, flat.shape[1]), dim=1).values[:, -1].clamp(min=0)
    return torch.nonzero(scores > kth_score[:, None, None])


def group_pixels(
    centers: torch.Tensor, offsets: torch.Tensor, foreground: torch.Tensor
) -> torch.Tensor:
    """
    Instance id of every ``foreground`` pixel: ``1 +`` the index in ``centers`` (``[K, 3]``
    rows ``(image, y, x)``) of the center of its image nearest to the pixel moved by its
    offset. ``offsets`` is ``[N, 2, H, W]`` (dy, dx); pixels outside ``foreground`` get 0.

    Distances are the reference's (``torch.norm`` of the float differences, the first center
    among equal distances), computed only for foreground pixels and only to the centers that
    can be nearest to them: moved pixels are binned into tiles, and a center is a candidate
    for a tile when its distance to the tile's bounding box is at most the smallest
    farthest-point distance of any center to that box.
    """
    instance_ids = torch.zeros(foreground.shape, dtype=torch.int64, device=offsets.device)
    image, y, x = torch.nonzero(foreground, as_tuple=True)
    if len(centers) == 0 or len(image) == 0:
        return instance_ids
    location = torch.stack((y, x), dim=1).to(offsets.dtype) + offsets[image, :, y, x]
    center_points = centers[:, 1:].to(offsets.dtype)
    tile, candidates, valid = _candidate_centers(location, image, centers, foreground.shape)
    candidate_points = center_points[candidates]  # [tiles, candidates, 2]
    nearest = torch.empty(len(image), dtype=torch.int64, device=offsets.device)
    chunk = max(1, _DISTANCE_CHUNK_ELEMENTS // candidates.shape[1])
    for start in range(0, len(image), chunk):
        pixels = slice(start, start + chunk)
        pixel_tiles = tile[pixels]
        # torch.norm of (center - location): exactly the reference's distance arithmetic.
        distance = torch.norm(
            candidate_points.index_select(0, pixel_tiles) - location[pixels, None], dim=-1
        )
        pixel_valid = valid.index_select(0, pixel_tiles)
        distance.masked_fill_(~pixel_valid, float("inf"))
        closest = distance.argmin(dim=1, keepdim=True)
        closest_center = candidates.index_select(0, pixel_tiles).gather(1, closest)[:, 0]
        # No candidate: the pixel's image has no center (instance 0, as in the reference).
        nearest[pixels] = torch.where(pixel_valid.any(dim=1), closest_center, -1)
    instance_ids[image, y, x] = nearest + 1
    return instance_ids


def _candidate_centers(location, image, centers, shape):
    """
    Tile of each moved pixel, and per tile the indices of the centers that can be nearest to
    its pixels (ascending, padded; ``valid`` marks the real ones). Bounds are computed in
    float64 with a margin above float32 rounding, so the candidate set is never too small.
    """
    num_images, height, width = shape
    tiles_y, tiles_x = -(-height // _TILE), -(-width // _TILE)
    tile_y = (location[:, 0] // _TILE).long().clamp(0, tiles_y - 1)
    tile_x = (location[:, 1] // _TILE).long().clamp(0, tiles_x - 1)
    tile = (image * tiles_y + tile_y) * tiles_x + tile_x
    num_tiles = num_images * tiles_y * tiles_x
    index = tile[:, None].expand(-1, 2)
    low = location.new_full((num_tiles, 2), float("inf")).scatter_reduce(0, index, location, "amin")
    high = location.new_full((num_tiles, 2), -float("inf")).scatter_reduce(
        0, index, location, "amax"
    )
    low, high = low.double(), high.double()  # the extremes are exact; the bounds need float64
    occupied = torch.isfinite(low[:, 0])
    low, high = low[occupied, None], high[occupied, None]  # [tiles, 1, 2]
    points = centers[None, :, 1:].double()  # [1, K, 2]
    # Squared distances from each center to the nearest and the farthest point of each box.
    to_nearest = (torch.maximum(low - points, points - high).clamp(min=0) ** 2).sum(-1)
    to_farthest = (torch.maximum(points - low, high - points) ** 2).sum(-1)
    tile_image = torch.div(torch.nonzero(occupied)[:, 0], tiles_y * tiles_x, rounding_mode="floor")
    same_image = centers[None, :, 0] == tile_image[:, None]
    to_farthest.masked_fill_(~same_image, float("inf"))
    bound = to_farthest.min(dim=1, keepdim=True).values
    is_candidate = same_image & (to_nearest <= bound * (1 + 1e-5) + 1e-3)
    # Candidates first, in ascending center order (argmin then returns the reference's center
    # among equal distances), padded to the largest candidate count of any tile.
    order = torch.sort((~is_candidate).to(torch.uint8), dim=1, stable=True).indices
    width_needed = max(1, int(is_candidate.sum(dim=1).max()))
    order = order[:, :width_needed]
    valid = is_candidate.gather(1, order)
    # Back to all tiles (unoccupied ones are never looked up).
    tile_row = torch.cumsum(occupied, 0) - 1
    return tile_row[tile], order, valid


def merge_semantic_and_instance(
    sem_seg: torch.Tensor,
    instance_ids: torch.Tensor,
    centers: torch.Tensor,
    is_thing_class: torch.Tensor,
    label_divisor: int,
    stuff_area: int,
    void_label: int,
) -> torch.Tensor:
    """
    Panoptic labels ``class * label_divisor + instance number`` ``[N, H, W]``.

    Each instance takes the majority semantic class of its pixels (the smallest class among
    equal counts, like ``torch.mode``) and is numbered 1, 2, ... within its image and class in
    center order; stuff classes cover their pixels outside instances when they have at least
    ``stuff_area`` of them; the rest is ``void_label``.

    ``instance_ids`` come from :func:`group_pixels` (0 = no instance, ``k + 1`` = ``centers[k]``)
    and ``is_thing_class`` is a bool vector over semantic classes.
    """
    num_images, num_classes = sem_seg.shape[0], len(is_thing_class)
    panoptic = torch.full_like(sem_seg, void_label)
    in_instance = instance_ids > 0

    # Majority vote: per-instance class histograms, one bincount for all instances.
    num_rows = len(centers) + 1
    votes = torch.bincount(
        instance_ids[in_instance] * num_classes + sem_seg[in_instance],
        minlength=num_rows * num_classes,
    ).view(num_rows, num_classes)[1:]
    instance_class = votes.argmax(dim=1)
    present = votes.sum(dim=1) > 0
    # Number instances per (image, class) in center order, counting only present ones.
    group = centers[:, 0] * num_classes + instance_class
    members = F.one_hot(group, num_images * num_classes) * present[:, None]
    number = members.cumsum(dim=0).gather(1, group[:, None]).squeeze(1)
    instance_label = torch.cat(
        (number.new_full((1,), void_label), instance_class * label_divisor + number)
    )
    panoptic[in_instance] = instance_label[instance_ids[in_instance]]

    # Stuff: pixels outside instances, per (image, class) area against the threshold.
    image_index = torch.arange(num_images, device=sem_seg.device)[:, None, None]
    image_class = image_index * num_classes + sem_seg
    outside = ~in_instance
    area = torch.bincount(image_class[outside], minlength=num_images * num_classes)
    kept_stuff = (area >= stuff_area) & ~is_thing_class.repeat(num_images)
    is_stuff = outside & kept_stuff[image_class]
    panoptic[is_stuff] = sem_seg[is_stuff] * label_divisor
    return panoptic


def get_panoptic_segmentation(
    sem_seg: torch.Tensor,
    center_heatmaps: torch.Tensor,
    offsets: torch.Tensor,
    thing_ids: Iterable[int],
    num_classes: int,
    label_divisor: int,
    stuff_area: int,
    void_label: int,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int | None = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Panoptic-DeepLab's post-processing for ``N`` images of one size.

    Args:
        sem_seg: ``[N, H, W]`` int64 semantic classes in ``[0, num_classes)``.
        center_heatmaps: ``[N, H, W]`` center scores.
        offsets: ``[N, 2, H, W]`` offsets (dy, dx) from each pixel to its instance center.
        thing_ids: the semantic classes that are things.
        label_divisor: must exceed the number of instances of one class in one image.
        stuff_area, void_label, threshold, nms_kernel, top_k: as in the reference.

    Returns:
        ``[N, H, W]`` int64 labels ``class * label_divisor + instance`` (instance 0 for stuff,
        ``void_label`` where nothing is predicted) and the ``[K, 3]`` centers ``(image, y, x)``.
    """
    if sem_seg.dim() != 3 or center_heatmaps.shape != sem_seg.shape:
        raise ValueError(
            f"expected sem_seg and center_heatmaps of shape [N, H, W], got "
            f"{tuple(sem_seg.shape)} and {tuple(center_heatmaps.shape)}"
        )
    if offsets.shape != (sem_seg.shape[0], 2, *sem_seg.shape[1:]):
        raise ValueError(f"expected offsets of shape [N, 2, H, W], got {tuple(offsets.shape)}")
    if top_k is not None and label_divisor <= top_k:
        raise ValueError(f"label_divisor ({label_divisor}) must exceed top_k ({top_k})")
    is_thing_class = torch.zeros(num_classes, dtype=torch.bool, device=sem_seg.device)
    is_thing_class[list(thing_ids)] = True
    centers = find_instance_centers(center_heatmaps, threshold, nms_kernel, top_k)
    instance_ids = group_pixels(centers, offsets, is_thing_class[sem_seg])
    panoptic = merge_semantic_and_instance(
        sem_seg, instance_ids, centers, is_thing_class, label_divisor, stuff_area, void_label
    )
    return panoptic, centers


@dataclass(frozen=True, kw_only=True)
class PanopticDeepLabPostprocessor:
    """
    One image's semantic logits, center heatmap and offsets -> ``panoptic_seg`` (segment ids,
    0 = void, ``segments_info`` in separated ids), ``sem_seg`` (stuff scores with all thing
    classes merged into class 0) and ``instances`` (the thing segments with the paper's scores).
    """

    ids: UnifiedIds
    label_divisor: int
    stuff_area: int
    center_threshold: float
    nms_kernel: int
    top_k: int

    def __post_init__(self):
        if self.label_divisor <= self.top_k:
            raise ValueError(
                f"MODEL.PANOPTIC_DEEPLAB.LABEL_DIVISOR ({self.label_divisor}) must exceed "
                f"TOP_K_INSTANCE ({self.top_k})"
            )

    def __call__(
        self,
        sem_seg: torch.Tensor,
        center: torch.Tensor,
        offset: torch.Tensor,
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> dict:
        """One image's padded network outputs -> its predictions at ``output_size``."""
        height, width = output_size
        sem_seg = crop_and_resize(sem_seg, image_size, height, width)
        center = crop_and_resize(center, image_size, height, width)
        offset = crop_and_resize(offset, image_size, height, width)
        # Offsets are lengths in input pixels: rescale them with the image.
        scale = offset.new_tensor([height / image_size[0], width / image_size[1]])
        offset = offset * scale[:, None, None]
        logsumexp_all, logsumexp_things = class_logsumexps(
            sem_seg, slice(0, self.ids.num_thing_classes)
        )
        panoptic, _ = get_panoptic_segmentation(
            class_argmax(sem_seg)[None],
            center,
            offset[None],
            thing_ids=self.ids.thing_ids,
            num_classes=self.ids.num_classes,
            label_divisor=self.label_divisor,
            stuff_area=self.stuff_area,
            void_label=VOID,
            threshold=self.center_threshold,
            nms_kernel=self.nms_kernel,
            top_k=self.top_k,
        )
        segment_ids, segments_info = self.segments(panoptic[0])
        instances = self.instances(segment_ids, segments_info, sem_seg, logsumexp_all, center[0])
        # Thing segments carry their instance's score, as the other methods' do (panoptic AP).
        things = (info for info in segments_info if info["isthing"])
        for info, score in zip(things, instances.scores.tolist()):
            info["score"] = score
        # The semantic evaluator's classes: things merged into class 0 (log of the summed thing
        # probabilities), then the stuff classes.
        semantic = torch.cat((logsumexp_things[None], sem_seg[self.ids.num_thing_classes :]))
        return panoptic_output((segment_ids, segments_info), semantic, instances)

    def segments(self, panoptic: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Panoptic labels (``class * label_divisor + instance``, void -1) -> the project's
        (segment ids with 0 = void, ``segments_info`` in separated ids)."""
        labels, segment_ids, areas = torch.unique(panoptic, return_inverse=True, return_counts=True)
        if len(labels) and labels[0] == VOID:
            labels, areas = labels[1:], areas[1:]  # sorted first: void is segment id 0
        else:
            segment_ids = segment_ids + 1
        segments_info = []
        for segment_id, (label, area) in enumerate(zip(labels.tolist(), areas.tolist()), 1):
            category_id, isthing = self.ids.to_separated(label // self.label_divisor)
            segments_info.append(
                {"id": segment_id, "category_id": category_id, "isthing": isthing, "area": area}
            )
        return segment_ids.to(torch.int32), segments_info

    def instances(
        self,
        segment_ids: torch.Tensor,
        segments_info: list[dict],
        sem_seg: torch.Tensor,
        logsumexp_all: torch.Tensor,
        center: torch.Tensor,
    ) -> Instances:
        """
        The thing segments as detectron2 ``Instances`` for instance AP, scored as the paper
        (and detectron2's reference) does: the mean semantic probability of the segment's class
        over its pixels times the center heatmap at the segment's centroid (coordinates
        truncated to integers). One pass over the pixels for all segments.
        """
        flat_ids = segment_ids.flatten().long()
        num_ids = len(segments_info) + 1
        unified = [0] + [self.ids.to_unified(x["category_id"], x["isthing"]) for x in segments_info]
        pixel_class = torch.tensor(unified, device=flat_ids.device)[flat_ids]
        # Softmax probability of each pixel's own class only (no [classes, H, W] softmax);
        # ``logsumexp_all``: the log-sum-exp of ``sem_seg`` over the classes.
        height, width = segment_ids.shape
        own_logit = sem_seg.gather(0, pixel_class.view(1, height, width))[0].flatten()
        own_class_prob = (own_logit - logsumexp_all.flatten()).exp()
        ys, xs = torch.meshgrid(
            torch.arange(height, device=flat_ids.device, dtype=torch.float64),
            torch.arange(width, device=flat_ids.device, dtype=torch.float64),
            indexing="ij",
        )
        counts = torch.bincount(flat_ids, minlength=num_ids).clamp(min=1)
        mean_prob = torch.bincount(flat_ids, own_class_prob.double(), num_ids) / counts
        center_y = (torch.bincount(flat_ids, ys.flatten(), num_ids) / counts).long()
        center_x = (torch.bincount(flat_ids, xs.flatten(), num_ids) / counts).long()

        things = [x for x in segments_info if x["isthing"]]
        thing_ids = torch.tensor(
            [x["id"] for x in things], device=flat_ids.device, dtype=torch.long
        )
        instances = Instances((height, width))
        instances.pred_masks = segment_ids[None] == thing_ids[:, None, None]
        instances.pred_classes = torch.tensor(
            [x["category_id"] for x in things], device=flat_ids.device, dtype=torch.long
        )
        instances.scores = (
            mean_prob[thing_ids].float() * center[center_y[thing_ids], center_x[thing_ids]]
        )
        instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
        return instances
