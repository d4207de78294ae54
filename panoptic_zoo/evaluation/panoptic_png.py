"""
COCO panoptic PNGs to segment ids (``R + 256 G + 256**2 B``), fast.

A panoptic PNG is a few flat regions: a ~150:1 deflate stream, which libdeflate inflates ~20
times faster than zlib (what libpng, PIL and cv2 use). The usual kind, non-interlaced 8-bit RGB
or RGBA, is therefore inflated with libdeflate and then read by the C kernels of
``_pq_kernels``, which undo PNG's row filters straight into ids, row by row: either into an id
image (:func:`decode_segment_ids`) or, for evaluation, while counting pixels of (ground truth,
prediction) pairs, without an image in between (:class:`InflatedPng`, read by
:func:`~.pq.pixel_pairs`). Other kinds (interlaced, palette, grey, 16-bit) are decoded by
Pillow, as panopticapi reads them, and so is every kind where the C extension is not built.
"""

from __future__ import annotations

import io
import os
import struct
from typing import NamedTuple

import deflate
import numpy as np
from PIL import Image

from ..utils.c_extensions import load_c_extension

__all__ = ["InflatedPng", "decode_segment_ids", "open_segment_ids", "read_segment_ids"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bytes per pixel of the PNG kinds the kernels read: 8-bit RGB (colour type 2) and RGBA (6).
KERNEL_CHANNELS = {2: 3, 6: 4}
PQ_KERNELS = load_c_extension("panoptic_zoo.evaluation._pq_kernels")


class InflatedPng(NamedTuple):
    """The inflated image data of a non-interlaced 8-bit RGB(A) PNG: still row-filtered."""

    data: bytes  # per row: the filter type byte, then the filtered samples
    channels: int  # 3 (RGB) or 4 (RGBA)
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def segment_ids(self) -> np.ndarray:
        ids = np.empty(self.shape, np.uint32)
        PQ_KERNELS.unfilter_ids((self.data, self.channels), self.height, self.width, ids)
        return ids


def open_segment_ids(png: bytes, path: str | os.PathLike | None = None) -> InflatedPng | np.ndarray:
    """
    The segment ids of a COCO panoptic PNG given as bytes, in the form that evaluation reads
    fastest: an :class:`InflatedPng` for a non-interlaced 8-bit RGB(A) file, the decoded ids
    (``uint32``, H x W) for any other kind. Raises ValueError, naming ``path`` if given, for
    data that is not a PNG.
    """
    try:
        return _open(png)
    except ValueError as error:
        raise ValueError(f"{path}: {error}" if path is not None else str(error)) from None


def _open(png: bytes) -> InflatedPng | np.ndarray:
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    pos, header, idat = len(PNG_SIGNATURE), None, []
    while pos + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        if kind == b"IHDR":
            header = struct.unpack_from(">IIBBBBB", png, pos + 8)
        elif kind == b"IDAT":
            idat.append(png[pos + 8 : pos + 8 + length])
        elif idat:
            break  # past the image data: nothing after it affects the pixels
        pos += 12 + length
    if header is None or not idat:
        raise ValueError("not a valid PNG file (no IHDR or no image data)")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in KERNEL_CHANNELS or interlace or PQ_KERNELS is None:
        return _decode_with_pillow(png)
    channels = KERNEL_CHANNELS[colour]
    try:
        data = deflate.zlib_decompress(b"".join(idat), height * (1 + width * channels))
    except deflate.DeflateError as error:
        raise ValueError(f"damaged PNG image data ({error})") from None
    return InflatedPng(data, channels, height, width)


def _decode_with_pillow(png: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.uint32)
    return rgb[..., 0] | rgb[..., 1] << 8 | rgb[..., 2] << 16


def decode_segment_ids(png: bytes, path: str | os.PathLike | None = None) -> np.ndarray:
    """The segment ids (``uint32``, H x W) of a COCO panoptic PNG given as bytes."""
    image = open_segment_ids(png, path)
    return image.segment_ids() if isinstance(image, InflatedPng) else image


def read_segment_ids(path: str | os.PathLike) -> np.ndarray:
    """The segment ids (``uint32``, H x W) of the COCO panoptic PNG at ``path``."""
    with open(path, "rb") as f:
        return decode_segment_ids(f.read(), path)
