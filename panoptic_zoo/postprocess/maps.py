"""Per-pixel score maps (logits, heatmaps) from the padded network output to the output size."""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import torch
from torch.nn import functional as F

from ..utils.chunks import row_chunks

__all__ = [
    "ClassMapKernels",
    "class_argmax",
    "class_logsumexps",
    "class_map_kernels",
    "crop_and_resize",
    "masks_above",
    "merged_class_probabilities",
]


class ClassMapKernels(Protocol):
    """Faster equivalents of :func:`class_argmax` and :func:`class_logsumexps` for the logits
    they ``take`` (panoptic_zoo.acceleration's C kernels)."""

    def takes(self, logits: torch.Tensor) -> bool: ...

    def argmax(self, logits: torch.Tensor) -> torch.Tensor: ...

    def logsumexps(
        self, logits: torch.Tensor, group: slice
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


_kernels: ContextVar[ClassMapKernels | None] = ContextVar("class_map_kernels", default=None)


@contextmanager
def class_map_kernels(kernels: ClassMapKernels | None):
    """Within the block, :func:`class_argmax` and :func:`class_logsumexps` hand the logits that
    ``kernels`` take to them (None: PyTorch's paths)."""
    token = _kernels.set(kernels)
    try:
        yield
    finally:
        _kernels.reset(token)


def _kernels_for(logits: torch.Tensor) -> ClassMapKernels | None:
    kernels = _kernels.get()
    return kernels if kernels is not None and kernels.takes(logits) else None

# Pixels per chunk of the per-pixel passes over class logits: one chunk's classes x pixels floats
# stay in cache through all the reductions, instead of a pass over ~0.5 GB for each (COCO's 133
# classes at 800x1333).
CLASS_PASS_PIXELS = 8192


def crop_and_resize(
    maps: torch.Tensor, image_size: tuple[int, int], height: int, width: int
) -> torch.Tensor:
    """
    detectron2's ``sem_seg_postprocess``: ``[C, H, W]`` maps cropped to ``image_size`` (the
    unpadded input) and bilinearly resized to ``height`` x ``width``, except that a crop already
    of that size is returned as it is (what the resize would give, at the cost of a full pass
    over the maps).
    """
    cropped = maps[:, : image_size[0], : image_size[1]]
    if cropped.shape[1:] == (height, width):
        return cropped
    resized = F.interpolate(
        cropped[None], size=(height, width), mode="bilinear", align_corners=False
    )
    return resized[0]


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``torch.argmax(logits, dim=0)`` of ``[C, H, W]`` logits (first maximum, NaN largest),
    or the same, bit for bit, from the :func:`class_map_kernels` in effect."""
    kernels = _kernels_for(logits)
    return logits.argmax(dim=0) if kernels is None else kernels.argmax(logits)


def class_logsumexps(logits: torch.Tensor, group: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per pixel of ``[C, H, W]`` logits (any strides), the log-sum-exp over all classes and over
    the classes ``group`` (a contiguous slice): ``torch.logsumexp`` over dim 0, to float rounding,
    in one pass of row chunks, or from the :func:`class_map_kernels` in effect. Each class is
    exponentiated once: the log-sum-exp over all classes combines the group's with the others'
    (logaddexp).
    """
    logits = logits.detach()  # post-processing: out= takes no tensor that requires grad
    classes, height, width = logits.shape
    others = _other_classes(classes, group, "group")
    kernels = _kernels_for(logits)
    if kernels is not None:
        return kernels.logsumexps(logits, group)
    in_group = logits.new_empty((height, width))
    everything = logits.new_empty((height, width))
    for rows in row_chunks(height, width, CLASS_PASS_PIXELS):
        chunk = logits[:, rows]
        total = in_group[rows] = _logsumexp_over_dim0(chunk[group])
        for part in others:
            total = torch.logaddexp(total, _logsumexp_over_dim0(chunk[part]))
        everything[rows] = total
    return everything, in_group


def _other_classes(classes: int, group: slice, name: str) -> list[slice]:
    """The classes outside ``group`` (consecutive, non-empty, else an error) as 0-2 slices."""
    in_group = range(classes)[group]
    if in_group.step != 1 or not in_group:
        raise ValueError(f"{name} must be a non-empty slice of consecutive classes, got {group}")
    return [
        part
        for part in (slice(0, in_group.start), slice(in_group.stop, classes))
        if part.stop > part.start
    ]


# exp() of float32 below this underflows to a denormal or 0, and PyTorch's CPU exp takes a ~14x
# slower path for such inputs (random-weight logits have them on almost every pixel).
EXP_UNDERFLOW = -87.0


def _logsumexp_over_dim0(x: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(x, dim=0)``, the same operations, with :func:`_exp_minus`."""
    maxima = x.amax(dim=0)
    shift = maxima.masked_fill(maxima.isinf(), 0)  # as torch: no inf - inf
    result = _exp_minus(x, shift).sum(dim=0).log_().add_(shift)
    # All -inf: torch's sum of exp(-inf) is 0, the log -inf, which the clamp must not change.
    return result.masked_fill_(maxima == -math.inf, -math.inf)


def _exp_minus(x: torch.Tensor, maxima: torch.Tensor) -> torch.Tensor:
    """
    ``exp(x - maxima)``, the differences clamped at ``EXP_UNDERFLOW``: with ``maxima`` the
    maximum over dim 0, its own term is exp(0) = 1, so terms below exp(-87) ~ 1.6e-38 (at most a
    few hundred of them) never change a sum over dim 0.
    """
    return (x - maxima).clamp_(min=EXP_UNDERFLOW).exp_()


def merged_class_probabilities(logits: torch.Tensor, merged: slice) -> torch.Tensor:
    """
    The softmax over dim 0 of ``[C, H, W]`` logits (any strides) with the classes ``merged``
    (a non-empty slice of consecutive classes) summed into one channel: ``[1 + C - len(merged),
    H, W]``, channel 0 the merged classes, then the others in order. One pass of row chunks,
    each class exponentiated once (to float rounding of ``softmax``; see :func:`_exp_minus`).
    """
    logits = logits.detach()
    classes, height, width = logits.shape
    kept = _other_classes(classes, merged, "merged")
    kept_classes = sum(part.stop - part.start for part in kept)
    probabilities = logits.new_empty((1 + kept_classes, height, width))
    for rows in row_chunks(height, width, CLASS_PASS_PIXELS):
        chunk = logits[:, rows]
        terms = _exp_minus(chunk, chunk.amax(dim=0))
        total = terms.sum(dim=0)
        torch.div(terms[merged].sum(dim=0), total, out=probabilities[0, rows])
        channel = 1
        for part in kept:
            count = part.stop - part.start
            torch.div(terms[part], total, out=probabilities[channel : channel + count, rows])
            channel += count
    return probabilities


def masks_above(
    maps: torch.Tensor, threshold: float, chunk_floats: int = 2**20
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    ``maps > threshold`` for ``[N, H, W]`` maps, and the masks' boxes (``[N, 4]`` float32
    XYXY, exclusive ends, zeros for an empty mask: detectron2's
    ``BitMasks.get_bounding_boxes``), from one pass of row chunks instead of a thresholding
    pass and two projection passes over the N x H x W masks.
    """
    count, height, width = maps.shape
    masks = torch.empty(maps.shape, dtype=torch.bool, device=maps.device)
    rows_hit = torch.empty((count, height), dtype=torch.bool, device=maps.device)
    columns_hit = torch.zeros((count, width), dtype=torch.bool, device=maps.device)
    for rows in row_chunks(height, count * width, chunk_floats):
        above = torch.gt(maps[:, rows], threshold, out=masks[:, rows])
        torch.any(above, dim=2, out=rows_hit[:, rows])
        columns_hit |= above.any(dim=1)
    x0, x1 = _first_and_last(columns_hit)
    y0, y1 = _first_and_last(rows_hit)
    boxes = torch.stack((x0, y0, x1 + 1, y1 + 1), dim=1).float()
    empty = ~(columns_hit.any(dim=1) & rows_hit.any(dim=1))
    return masks, boxes.masked_fill_(empty[:, None], 0)


def _first_and_last(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the first and the last True of each row of ``hits`` ([N, L] bool)."""
    length = hits.shape[1]
    first = hits.to(torch.uint8).argmax(dim=1)
    last = length - 1 - hits.flip(1).to(torch.uint8).argmax(dim=1)
    return first, last
